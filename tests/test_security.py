"""Secrets never leak; BI reads analytics and nothing else; servers bind to loopback."""

from __future__ import annotations

import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from buffalo_assets.sandbox.faults import FaultPlan
from tests.conftest import ROOT, SandboxFactory
from tests.pipeline import MATERIALIZE, subprocess_env


def every_row_as_text(engine: sa.Engine) -> str:
    """The whole database (Dagster's runs, events, snapshots and the data) as one text."""
    with engine.connect() as connection:
        tables = connection.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
            )
        ).all()
        chunks = []
        for schema, table in tables:
            rows = connection.execute(sa.text(f'SELECT t::text FROM "{schema}"."{table}" AS t')).scalars()
            chunks.append("\n".join(rows))
    return "\n".join(chunks)


def test_no_password_encrypted_password_or_ticket_leaks_anywhere(
    start_sandbox: SandboxFactory,
    pg_url: str,
    dagster_home: Path,
    instance: DagsterInstance,
    empty_store: sa.Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "Unusual-Pw/7f3c+secret=="
    running = start_sandbox(
        orders=80,
        username="ops-7f3c@solo.example",
        password=password,
        faults=FaultPlan.mixed(0.2, retry_after_s=0.05, ticket_ttl_s=1.0),
    )
    env = subprocess_env(running, pg_url, dagster_home)
    texts: list[str] = []
    ok = subprocess.run(MATERIALIZE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    wrong = subprocess.run(
        MATERIALIZE, cwd=ROOT, env={**env, "BUFFALO_PASSWORD": password + "-wrong"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wrong.returncode != 0 and "Incorrect username or password" in wrong.stdout + wrong.stderr
    texts += [ok.stdout, ok.stderr, wrong.stdout, wrong.stderr]

    # The production job in this process too, so Python's own log records are captured.
    caplog.set_level("DEBUG")
    for key in ("BUFFALO_BASE_URL", "BUFFALO_USERNAME", "BUFFALO_PASSWORD"):
        monkeypatch.setenv(key, env[key])
    from buffalo_assets.definitions import defs

    result = defs.resolve_job_def("ingest_orders").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    texts.append(caplog.text)
    texts += [str(e.message) for e in result.all_events]
    texts += [p.read_text(errors="replace") for p in dagster_home.rglob("*") if p.is_file()]  # compute logs
    texts.append(every_row_as_text(empty_store))

    secrets = {password, password + "-wrong"} | running.sandbox.secrets_seen
    assert len(running.sandbox.secrets_seen) >= 6  # tickets issued, encrypted passwords received
    everything = "\n".join(texts)
    assert running.sandbox.config.username in everything  # the scan does see what it should
    assert [secret for secret in secrets if secret in everything] == []


def test_the_bi_role_reads_analytics_and_nothing_else(pg_url: str, engine: sa.Engine) -> None:
    role = f"bi_test_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(
            sa.text("CREATE TABLE IF NOT EXISTS analytics.delivery_kpis (week text, on_time numeric)")
        )
        connection.execute(sa.text("INSERT INTO analytics.delivery_kpis VALUES ('2026-W48', 0.93)"))
    granted = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "db", "grant-bi", "--role", role],
        env={"BUFFALO_PG_URL": pg_url, "BUFFALO_BI_PASSWORD": "bi-secret", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    assert f"role {role} reads schema analytics only" in granted.stdout
    bi = sa.create_engine(make_url(pg_url).set(username=role, password="bi-secret"))
    try:
        with bi.connect() as connection:
            assert connection.execute(
                sa.text("SELECT on_time FROM analytics.delivery_kpis")
            ).scalar_one() == Decimal("0.93")
        for statement in (
            "SELECT * FROM raw.order_versions",
            "SELECT * FROM raw.orders",
            "SELECT * FROM core.clean_orders",
            "SELECT * FROM ops.fetch_errors",
            "SELECT * FROM public.runs",
            "INSERT INTO analytics.delivery_kpis VALUES ('x', 1)",
            "DELETE FROM analytics.delivery_kpis",
            "CREATE TABLE analytics.sneaky (x int)",
        ):
            with (
                bi.connect() as connection,
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
            ):
                connection.execute(sa.text(statement))
        with engine.begin() as connection:  # tables created later are readable too
            connection.execute(sa.text("CREATE TABLE analytics.later_kpis AS SELECT 1 AS one"))
        with bi.connect() as connection:
            assert connection.execute(sa.text("SELECT one FROM analytics.later_kpis")).scalar_one() == 1
    finally:
        bi.dispose()
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS analytics.later_kpis, analytics.delivery_kpis"))
            connection.execute(sa.text(f'DROP OWNED BY "{role}"'))
            connection.execute(sa.text(f'DROP ROLE "{role}"'))


def test_the_sandbox_and_the_dagster_ui_bind_to_loopback_by_default() -> None:
    for command in (["sandbox", "--help"], ["dev", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "buffalo_assets.cli", *command], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0
    from buffalo_assets.cli import dev, sandbox

    for command in (sandbox, dev):
        assert next(p for p in command.params if p.name == "host").default == "127.0.0.1"
