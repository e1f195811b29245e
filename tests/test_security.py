"""Secrets never leak; BI reads the analytics.bi_* views and nothing else; servers bind to loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
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


BI_VIEWS = (
    "bi_calendar", "bi_customer_alerts", "bi_delay_model_drift", "bi_delay_model_performance",
    "bi_delay_models", "bi_delay_predictions", "bi_delay_worklist", "bi_delivery_kpis", "bi_inbound_stock",
    "bi_late_shares", "bi_order_delay_risk", "bi_order_status", "bi_stage_durations", "bi_stock_cover",
)  # fmt: skip


def test_the_bi_role_reads_the_bi_views_and_nothing_else(
    pg_url: str, engine: sa.Engine, instance: DagsterInstance
) -> None:
    del instance  # Dagster's tables (public.runs) exist, so refusing them is a permission check
    role = f"bi_test_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO analytics.delivery_kpis (grain, period_start, orders_created, orders_delivered, "
                "orders_late, on_time_share, orders_stuck, as_of) "
                "VALUES ('week', '2000-01-03', 10, 8, 1, 0.875, 0, now()) ON CONFLICT DO NOTHING"
            )
        )

    def grant() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "buffalo_assets.cli", "db", "grant-bi", "--role", role],
            env={
                "BUFFALO_PG_URL": pg_url,
                "BUFFALO_BI_PASSWORD": "bi-secret",
                "BUFFALO_BI_STATEMENT_TIMEOUT_S": "1.5",
                "BUFFALO_BI_CONNECTION_LIMIT": "3",
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    granted = grant()
    assert granted.returncode == 0, granted.stderr
    assert f"role {role} reads the {len(BI_VIEWS)} views analytics.bi_* only" in granted.stdout
    assert "statement timeout 1.5 s" in granted.stdout and "connections 3" in granted.stdout
    bi = sa.create_engine(make_url(pg_url).set(username=role, password="bi-secret"))
    try:
        # A heavy DirectQuery visual cannot hold the database: the role's queries are cut off,
        # and it holds at most 3 connections.
        with bi.connect() as connection:
            connection.execute(sa.text("SELECT pg_sleep(0.2)"))
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                connection.execute(sa.text("SELECT pg_sleep(5)"))
        with engine.connect() as connection:
            limit = connection.execute(
                sa.text("SELECT rolconnlimit FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).scalar_one()
        assert limit == 3
        with bi.connect() as connection:
            for view in BI_VIEWS:
                connection.execute(sa.text(f"SELECT * FROM analytics.{view}")).all()
            assert connection.execute(
                sa.text(
                    "SELECT on_time_share FROM analytics.bi_delivery_kpis "
                    "WHERE grain = 'week' AND period_start = '2000-01-03'"
                )
            ).scalar_one() == pytest.approx(0.875)
        denied = (
            "SELECT * FROM raw.order_versions",
            "SELECT * FROM raw.orders",
            "SELECT * FROM core.clean_orders",
            "SELECT * FROM ops.fetch_errors",
            "SELECT * FROM ops.delay_models",
            "SELECT * FROM public.runs",
            # The base tables under the views may change shape: BI reads only the views.
            "SELECT * FROM analytics.delivery_kpis",
            "SELECT * FROM analytics.order_status_now",
            "SELECT * FROM analytics.order_delay_risk",
            "SELECT message FROM analytics.customer_alerts",
            "SELECT * FROM analytics.stock_cover",
            "SELECT * FROM ops.stock_levels",
            "INSERT INTO analytics.bi_late_shares VALUES ('day', '2026-11-23', 'province', 'x', 1, 0, 0)",
            "DELETE FROM analytics.bi_order_status",
            "CREATE TABLE analytics.sneaky (x int)",
        )
        for statement in denied:
            with (
                bi.connect() as connection,
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
            ):
                connection.execute(sa.text(statement))
        # A view added later (by a migration) is readable once grant-bi runs again; a table is not.
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE VIEW analytics.bi_later AS SELECT 1 AS one"))
            connection.execute(sa.text("CREATE TABLE analytics.later_table AS SELECT 1 AS one"))
        again = grant()
        assert again.returncode == 0, again.stderr
        with bi.connect() as connection:
            assert connection.execute(sa.text("SELECT one FROM analytics.bi_later")).scalar_one() == 1
            for view in BI_VIEWS:
                connection.execute(sa.text(f"SELECT * FROM analytics.{view}")).all()
        with bi.connect() as connection, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            connection.execute(sa.text("SELECT one FROM analytics.later_table"))
    finally:
        bi.dispose()
        with engine.begin() as connection:
            connection.execute(sa.text("DROP VIEW IF EXISTS analytics.bi_later"))
            connection.execute(sa.text("DROP TABLE IF EXISTS analytics.later_table"))
            connection.execute(
                sa.text(
                    "DELETE FROM analytics.delivery_kpis "
                    "WHERE period_start = '2000-01-03' AND orders_created = 10"
                )
            )
            connection.execute(sa.text(f'DROP OWNED BY "{role}"'))
            connection.execute(sa.text(f'DROP ROLE "{role}"'))


def test_the_sandbox_and_the_dagster_ui_bind_to_loopback_by_default() -> None:
    for command in (["sandbox", "--help"], ["dev", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "buffalo_assets.cli", *command], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0
    from buffalo_assets.cli.dev import dev
    from buffalo_assets.cli.sandbox import sandbox

    for command in (sandbox, dev):
        assert next(p for p in command.params if p.name == "host").default == "127.0.0.1"


def test_settings_and_check_warn_while_other_users_may_read_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BUFFALO_USERNAME=ops@solo.example\nBUFFALO_PASSWORD=hunter2-but-longer\n")
    user_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BUFFALO_", "DAGSTER_"))},
        "BUFFALO_HOME": str(tmp_path),
        # Nothing answers here: `buffalo check` stops at the API, after the warning.
        "BUFFALO_BASE_URL": "http://127.0.0.1:9",
    }

    def said(command: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "buffalo_assets.cli", command],
            env=user_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done.stdout + done.stderr

    env_file.chmod(0o644)  # what `cp .env.example .env` leaves under the usual umask
    for command in ("settings", "check"):
        output = said(command)
        assert f"{env_file} holds secrets but other users of this machine may read it (mode 0644)" in output
        assert f"chmod 600 {env_file}" in output and "hunter2" not in output
    env_file.chmod(0o600)
    for command in ("settings", "check"):
        assert "other users of this machine may read it" not in said(command)
