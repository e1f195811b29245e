"""Shared fixtures: a real PostgreSQL database per test session, and real sandboxes.

The database server is `BUFFALO_TEST_PG_URL` if set, else the server at 127.0.0.1:5432
if one answers, else the project's embedded server. Each session creates a uniquely
named database and drops it at the end.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.faults import FaultPlan
from buffalo_assets.sandbox.server import RunningSandbox, running_sandbox
from buffalo_assets.storage.database import create_engine, embedded_server, normalize_url, safe_url
from buffalo_assets.storage.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _server_answers(url: str) -> bool:
    parsed = make_url(url)
    try:
        psycopg2.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            dbname=parsed.database,
            connect_timeout=2,
        ).close()
    except psycopg2.OperationalError:
        return False
    return True


@functools.cache
def _test_server() -> tuple[str, str]:
    """The server the suite creates its database on, and why that one."""
    configured = os.environ.get("BUFFALO_TEST_PG_URL")
    if configured:
        return normalize_url(configured), "BUFFALO_TEST_PG_URL"
    if _server_answers(LOCAL_SERVER):
        return LOCAL_SERVER, "the server on 127.0.0.1:5432; set BUFFALO_TEST_PG_URL to choose another"
    return embedded_server().ensure_running(), "the project's embedded server (nothing answers on 5432)"


def pytest_report_header() -> str:
    """Say which PostgreSQL the suite uses, so that it is never a silent choice."""
    url, why = _test_server()
    return f"PostgreSQL for the tests: {safe_url(url)} ({why}); a throw-away database is created there"


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A URL of the server's maintenance database."""
    return _test_server()[0]


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, with the platform's schemas; dropped after."""
    name = f"buffalo_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def dagster_home(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real Dagster instance (the project's dagster.yaml) on the session database.

    The environment points at it, so code that reads BUFFALO_PG_URL or DAGSTER_HOME
    (the definitions, subprocesses) uses the test database and never starts the
    embedded server.
    """
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    saved = {k: os.environ.get(k) for k in ("BUFFALO_PG_URL", "DAGSTER_HOME")}
    os.environ.update({"BUFFALO_PG_URL": pg_url, "DAGSTER_HOME": str(home)})
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def instance(dagster_home: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        yield instance


@pytest.fixture
def empty_store(engine: sa.Engine) -> sa.Engine:
    """The session database with every platform table emptied."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "TRUNCATE raw.order_ids, raw.order_versions, ops.fetch_errors, ops.list_walks, "
                "core.clean_orders, core.order_items, core.order_events, ops.transform_errors, "
                "raw.order_observations, ops.gone_orders, ops.unstorable_payloads"
            )
        )
    return engine


SandboxFactory = Callable[..., RunningSandbox]


@pytest.fixture
def start_sandbox() -> Iterator[SandboxFactory]:
    """Start real sandboxes (HTTP on a free port) for the test; all stop at its end."""
    with ExitStack() as stack:

        def start(faults: FaultPlan | None = None, **config: Any) -> RunningSandbox:
            sandbox_config = SandboxConfig(faults=faults or FaultPlan(), **config)
            return stack.enter_context(running_sandbox(sandbox_config))

        yield start


_SESSION_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the load test's figures (written by tests/test_load.py) where CI's log shows them."""
    figures = ROOT / "bench" / "results" / "load-test.json"
    if figures.exists() and figures.stat().st_mtime >= _SESSION_STARTED:
        terminalreporter.write_sep("-", "load test figures")
        terminalreporter.write_line(figures.read_text())


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh copy of the checkout's tracked files (what a clone holds), sharing the suite's .venv."""
    copy = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (copy / ".venv").symlink_to((ROOT / ".venv").resolve())
    return copy
