"""Solo's stock list in `ops.stock_levels`: how many rows it holds, and replacing it whole.

`buffalo stock import` loads it (after `analytics/stock.py` checked every row) and the
`stock_cover` asset reads it. A replacement is one transaction under a table lock, so two
imports never interleave and readers see either the old list or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from buffalo_assets.storage.tables import stock_levels


def count_stock_levels(engine: sa.Engine) -> int:
    """Rows in `ops.stock_levels` now (the stock list an import would replace)."""
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(stock_levels)).scalar_one())


def replace_stock_levels(engine: sa.Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Replace every row of `ops.stock_levels` with `rows` in one transaction; the rows replaced.

    One import at a time (`SHARE ROW EXCLUSIVE` blocks another writer, not readers); readers
    keep seeing the old list until this commits. An item missing from `rows` is removed;
    `rows` is never empty (`parse_stock_levels` refuses a file without rows).
    """
    with engine.begin() as connection:
        connection.execute(sa.text("LOCK TABLE ops.stock_levels IN SHARE ROW EXCLUSIVE MODE"))
        replaced = connection.execute(sa.delete(stock_levels)).rowcount
        connection.execute(sa.insert(stock_levels), list(rows))
    return replaced
