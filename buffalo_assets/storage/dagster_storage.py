"""Dagster's PostgreSQL storage with connections kept open: the instance's `storage` class.

`dagster_postgres` opens a new database connection for every statement (SQLAlchemy's
`NullPool`), so that an idle DagsterInstance holds none. A run writes about a hundred
statements (each event, the pool slot claims, the run's status), and each new connection
costs a few milliseconds (a server process is forked per connection): about 0.4 s of a
7.5 s ingest command. `PooledPostgresStorage` is `DagsterPostgresStorage` whose run, event
log and schedule storages each keep one connection open (more, closed after use, when
threads need them at once), checked before each use so that a restarted server is
reconnected to. Only dagster-webserver did this before (its `optimize_for_webserver`
still replaces these engines with its own, the same but with a statement timeout).

Its config is `dagster_postgres`'s (`postgres_url`, `postgres_db`, ...), all optional: with
neither URL nor database given (the checkout's `dagster.yaml`), it uses the platform's
database: `BUFFALO_PG_URL`, else the embedded server (started if it is down, as `buffalo dev`
does), so `dg dev` in a fresh clone works with nothing set. The engines
are replaced through `dagster_postgres`'s `_engine` attribute of the pinned version
(pyproject.toml); `tests/test_dagster_storage.py` fails if that stops working.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

if TYPE_CHECKING:
    # Only for the type of `from_config_value`'s argument: Dagster exports no public name for
    # it (its own docs on custom instance classes import it from here too).
    from dagster._serdes import ConfigurableClassData

# Connections kept per storage; more are opened (and closed after use) when threads overlap.
POOL_SIZE = 1
MAX_OVERFLOW = 10
POOL_RECYCLE_S = 3600

_pooled_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _forget_parent_connections() -> None:
    """A forked child must not use (or close) the connections its parent holds."""
    for engine in list(_pooled_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def _close_on_dispose(storage: Any, *others: Any) -> None:
    dispose = storage.dispose

    def dispose_and_close() -> None:
        dispose()
        for each in (storage, *others):
            each._engine.dispose()  # noqa: SLF001

    storage.dispose = dispose_and_close


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` keeping one open connection per storage (see the module)."""

    def __init__(self, postgres_url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(postgres_url, *args, **kwargs)
        token_provider = kwargs.get("token_provider")
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            engine = create_pg_engine(
                postgres_url,
                token_provider,
                isolation_level="AUTOCOMMIT",  # what dagster_postgres's statements expect
                pool_size=POOL_SIZE,
                max_overflow=MAX_OVERFLOW,
                pool_recycle=POOL_RECYCLE_S,
                pool_pre_ping=True,
            )
            storage._engine.dispose()  # noqa: SLF001 - see the module docstring
            storage._engine = engine  # noqa: SLF001
            _pooled_engines.add(engine)
        # DagsterInstance.dispose() disposes the run and event log storages (not this object):
        # their disposal now also closes the open connections (the schedule storage's with the
        # run storage's), so a process that makes many instances does not collect them.
        _close_on_dispose(self._run_storage, self._schedule_storage)
        _close_on_dispose(self._event_log_storage)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledPostgresStorage:
        return cls(
            _database_url(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )


def _database_url(config_value: Any) -> str:
    """The configured URL or database, else BUFFALO_PG_URL, else the embedded server's."""
    if config_value.get("postgres_url") or config_value.get("postgres_db"):
        return pg_url_from_config(config_value)
    from buffalo_assets.storage.database import database_url

    return database_url()
