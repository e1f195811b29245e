"""What several `buffalo` commands share: the demo's database and its world record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buffalo_assets import settings


def demo_database_url(*, fresh: bool) -> str:
    """The demo's own database (BUFFALO_DEMO_DB, default buffalo_demo) on the usual server.

    Each demo starts a new sandbox world, so it starts from an empty database; the one in
    BUFFALO_PG_URL (or the embedded default) is never touched.
    """
    from sqlalchemy.engine import make_url

    from buffalo_assets.storage.database import database_url, recreate_database

    name = settings.load().demo_db
    if fresh:
        return recreate_database(database_url(), name)
    return make_url(database_url()).set(database=name).render_as_string(hide_password=False)


def demo_world_path() -> Path:
    """Where the demo records its sandbox world: beside its database, `.buffalo/<demo db>.sandbox.json`."""
    return settings.state_dir() / f"{settings.load().demo_db}.sandbox.json"


def figure(value: Any) -> str:
    """A figure for a summary; a missing one (None, NaN, not a number) as n/a."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "n/a"
    return f"{float(value):.3f}"
