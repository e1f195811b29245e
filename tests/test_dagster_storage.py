"""The Dagster instance's storage (the checkout's dagster.yaml): connections kept open, and reopened."""

from __future__ import annotations

import subprocess
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from buffalo_assets.storage.dagster_storage import PooledPostgresStorage
from tests.conftest import ROOT, SandboxFactory
from tests.pipeline import MATERIALIZE, subprocess_env


def _sessions_so_far(admin: sa.Engine, database: str) -> int:
    """Sessions ever opened on `database` (counted by PostgreSQL when each one ends)."""
    with admin.connect() as connection:
        connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return int(
            connection.execute(
                sa.text("SELECT sessions FROM pg_stat_database WHERE datname = :name"), {"name": database}
            ).scalar_one()
        )


def test_an_ingest_command_opens_a_few_database_sessions_not_one_per_event(
    start_sandbox: SandboxFactory,
    pg_server_url: str,
    pg_url: str,
    dagster_home: Path,
    instance: DagsterInstance,
    empty_store: sa.Engine,
) -> None:
    """Dagster's stock PostgreSQL storage connected anew for each of a run's ~100 statements."""
    assert instance.get_ref().storage_data.class_name == PooledPostgresStorage.__name__
    running = start_sandbox(orders=60)
    env = subprocess_env(running, pg_url, dagster_home)
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    database = make_url(pg_url).database
    assert database is not None
    try:
        before = _sessions_so_far(admin, database)
        done = subprocess.run(MATERIALIZE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        opened = _sessions_so_far(admin, database) - before
    finally:
        admin.dispose()
    assert opened <= 30, f"the command opened {opened} database sessions"


def test_the_instance_reconnects_after_its_open_connections_are_cut(pg_url: str, dagster_home: Path) -> None:
    """A database restart (or an idle-connection reaper) must not break a daemon or webserver."""
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                cut = connection.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND application_name <> 'buffalo_assets'"
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        assert cut >= 1, "the instance kept no connection open"
        assert instance.get_runs(limit=1) is not None
        instance.get_run_records(limit=1)
