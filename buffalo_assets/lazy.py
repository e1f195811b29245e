"""pandas and numpy, imported when first used instead of when a module that uses them is.

Loading the definitions (every `dagster` command, every run's start) imports every asset
module, but only the transform and analytics steps need pandas: importing it up front
cost a third of a second of every `dagster asset materialize`, ingest included. A module
that uses them writes

    if TYPE_CHECKING:
        import pandas as pd
    else:
        from buffalo_assets.lazy import pd

so type checkers see the real module and the code reads as usual; the first attribute read
(`pd.DataFrame`, `np.nan`) imports the module. Nothing may read one at import time (a
module-level constant such as `pd.Timedelta(days=1)`): tests/test_project.py checks that
importing the definitions leaves pandas and numpy unimported.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands in for a module until one of its attributes is first read, then holds them all."""

    def __init__(self, name: str) -> None:
        self.__name = name

    def __getattr__(self, attribute: str) -> Any:
        # Only called for what is not in this object's __dict__ yet: after the first read it
        # holds the module's attributes, so later reads cost what a module's do. The import
        # itself is thread-safe (the import system's module locks).
        module = importlib.import_module(self.__name)
        self.__dict__.update(vars(module))
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazily imported module {self.__name!r}>"


pd = LazyModule("pandas")
np = LazyModule("numpy")
