"""The database as a Dagster resource: one engine per process, schema upgraded once."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from dagster import ConfigurableResource
from pydantic import Field

from buffalo_assets.storage.database import create_engine, database_url, normalize_url
from buffalo_assets.storage.migrations import upgrade

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str | None) -> sa.Engine:
    """A process-wide engine for `url`, its schema upgraded to the migration head on first use.

    No URL: `BUFFALO_PG_URL` from the settings, else the embedded server if it runs, else
    `NoDatabaseError` naming the command to run (nothing is started here).
    """
    url = normalize_url(url) if url else database_url(start_embedded=False)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url)
            upgrade(engine)
            _engines[url] = engine
        return engine


class PostgresResource(ConfigurableResource):
    """The platform's PostgreSQL database (set `url` from the BUFFALO_PG_URL EnvVar)."""

    url: str | None = Field(
        default=None,
        description="Database URL (unset: BUFFALO_PG_URL, else the running embedded server)",
    )

    def get_engine(self) -> sa.Engine:
        return engine_for(self.url)
