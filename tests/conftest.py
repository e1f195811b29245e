"""Shared fixtures: a real PostgreSQL database per test session, and real sandboxes.

The database server is `BUFFALO_TEST_PG_URL` if set, else the server at 127.0.0.1:5432
if one answers, else the project's embedded server. Each session creates a uniquely
named database and drops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.faults import FaultPlan
from buffalo_assets.sandbox.server import RunningSandbox, running_sandbox
from buffalo_assets.storage.database import create_engine, embedded_server, normalize_url
from buffalo_assets.storage.tables import ensure_schema

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


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A URL of the server's maintenance database."""
    configured = os.environ.get("BUFFALO_TEST_PG_URL")
    if configured:
        return normalize_url(configured)
    if _server_answers(LOCAL_SERVER):
        return LOCAL_SERVER
    return embedded_server().ensure_running()


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, with the platform's schemas; dropped after."""
    name = f"buffalo_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    ensure_schema(engine)
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


SandboxFactory = Callable[..., RunningSandbox]


@pytest.fixture
def start_sandbox() -> Iterator[SandboxFactory]:
    """Start real sandboxes (HTTP on a free port) for the test; all stop at its end."""
    with ExitStack() as stack:

        def start(faults: FaultPlan | None = None, **config: Any) -> RunningSandbox:
            sandbox_config = SandboxConfig(faults=faults or FaultPlan(), **config)
            return stack.enter_context(running_sandbox(sandbox_config))

        yield start
