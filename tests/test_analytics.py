"""The analytics layer end to end: sandbox over HTTP, real PostgreSQL, a real Dagster instance.

One materialization of everything (what job `refresh_all` runs) fills every analytics
table; the model is stored versioned in PostgreSQL and checked against the baseline; a
sandbox clock advance and a second run rescore what is in flight. A young world without
delivered history still materializes, saying why there is no model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    Definitions,
    evaluate_automation_conditions,
)

from buffalo_assets.analytics.kpis import DELIVERY_KPI_COLUMNS, KPI_STAGES, LATE_SHARE_COLUMNS
from buffalo_assets.analytics.model import DELAY_RISK_COLUMNS, DelayModel
from buffalo_assets.analytics.report import FIGURES
from buffalo_assets.analytics.status import STATUS_NOW_COLUMNS
from buffalo_assets.assets.analytics import ANALYTICS_ASSETS, ANALYTICS_CHECKS
from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.storage import tables
from tests.conftest import SandboxFactory
from tests.pipeline import (
    EVERYTHING,
    INGESTION,
    UNCHECKED_ANALYTICS,
    check_results,
    metadata_of,
    resources,
    run,
    stop_group,
)

DAY = 86_400.0
ALL = [*EVERYTHING, *ANALYTICS_ASSETS, *ANALYTICS_CHECKS]
ANALYTICS_TABLES = (
    "analytics.order_stage_durations, analytics.order_status_now, analytics.delivery_kpis, "
    "analytics.delivery_late_shares, analytics.order_delay_risk, ops.delay_models, ops.delivery_reports"
)
CHECK = "model_beats_the_naive_baseline"
ANALYTICS_KEYS = (
    "order_stage_durations", "order_status_now", "delivery_kpis", "delivery_late_shares", "delay_model",
    "order_delay_risk", "delivery_report",
)  # fmt: skip
# The columns the issue fixes for analytics.order_delay_risk, in order, with their types.
RISK_COLUMNS = [
    ("order_id", "text"),
    ("promised_delivery_at", "timestamp with time zone"),
    ("expected_delivery_at", "timestamp with time zone"),
    ("p_late", "double precision"),
    ("at_risk", "boolean"),
    ("scored_at", "timestamp with time zone"),
    ("model_version", "text"),
]


@pytest.fixture
def analytics_store(empty_store: sa.Engine) -> sa.Engine:
    with empty_store.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {ANALYTICS_TABLES}"))
    return empty_store


def _count(connection: sa.Connection, table: str) -> int:
    return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_the_declared_analytics_tables_have_the_columns_the_analytics_core_produces() -> None:
    pairs = [
        (tables.order_status_now, STATUS_NOW_COLUMNS),
        (tables.delivery_kpis, DELIVERY_KPI_COLUMNS),
        (tables.delivery_late_shares, LATE_SHARE_COLUMNS),
        (tables.order_delay_risk, DELAY_RISK_COLUMNS),
    ]
    for table, columns in pairs:
        assert tuple(c.name for c in table.columns) == tuple(columns), table.name
    assert tables.KPI_STAGES == KPI_STAGES


def test_one_refresh_fills_every_analytics_table_and_later_runs_rescore_with_the_kept_model(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    analytics_store: sa.Engine,
    tmp_path: Path,
) -> None:
    # The clock starts a day in the past, so after advancing it no event lies in the future.
    running = start_sandbox(orders=1_500, history_days=90, start=time.time() - DAY - 60)
    first = run(running, pg_url, instance, ALL)
    verdict = next(e for e in first.get_asset_check_evaluations() if e.check_name == CHECK)
    judged = verdict.metadata["judged"].value
    assert judged, verdict.description
    figures = {k: verdict.metadata[k].value for k in ("model_f1", "baseline_f1", "model_auc", "baseline_auc")}
    beats = figures["model_f1"] > figures["baseline_f1"] and figures["model_auc"] > figures["baseline_auc"]
    # The check blocks (severity ERROR) and passes exactly when the model beats the baseline
    # on both F1 and AUC. Which one wins on a world made today varies with the date (its
    # congestion weeks are calendar weeks; the model is shown to win on fixed worlds in
    # tests/test_analytics_core.py and bench.delay), so both outcomes are held to what users see.
    assert verdict.severity == AssetCheckSeverity.ERROR
    assert verdict.passed == beats, (verdict.description, figures)
    assert ("model beats the baseline" if beats else "model is NOT better") in str(verdict.description)
    scored = {e.asset_key.to_user_string() for e in first.get_asset_materialization_events()}
    assert first.success == beats and ("order_delay_risk" in scored) == beats, (scored, figures)
    model_meta = metadata_of(first, "delay_model")  # trained and stored before the check runs
    if not beats:
        # Blocked: nothing was rescored. The next run without the check keeps the stored model
        # (younger than BUFFALO_MODEL_RETRAIN_HOURS) and scores with it.
        unblocked = run(running, pg_url, instance, UNCHECKED_ANALYTICS)
        assert unblocked.success and metadata_of(unblocked, "delay_model")["retrained"] is False
    assert model_meta["trained"] is True, model_meta.get("note")
    for who in ("model", "baseline"):
        for figure in ("auc", "precision", "recall", "f1", "mae_days"):
            assert f"{who}_{figure}" in model_meta
    assert model_meta["training_rows"] > 0

    engine = analytics_store
    with engine.connect() as connection:
        orders = _count(connection, "core.clean_orders")
        assert _count(connection, "analytics.order_status_now") == orders
        assert _count(connection, "analytics.order_stage_durations") >= orders * 0.9
        kpis = pd.read_sql_query("SELECT * FROM analytics.delivery_kpis", connection)
        assert set(kpis["grain"]) == {"day", "week"}
        assert kpis["orders_delivered"].sum() > 0 and kpis["median_hours_customs"].notna().any()
        assert _count(connection, "analytics.delivery_late_shares") > 0
        risk_columns = connection.execute(
            sa.text(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                "'analytics' AND table_name = 'order_delay_risk' ORDER BY ordinal_position"
            )
        ).all()
        assert [tuple(c) for c in risk_columns[: len(RISK_COLUMNS)]] == RISK_COLUMNS
        risk = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        in_flight = connection.execute(
            sa.text("SELECT count(*) FROM analytics.order_status_now WHERE stage NOT IN "
                    "('delivered', 'returned', 'cancelled', 'lost')")
        ).scalar_one()  # fmt: skip
        stored = connection.execute(
            sa.text("SELECT model_version, threshold, model FROM ops.delay_models WHERE model IS NOT NULL")
        ).one()
        report = connection.execute(sa.text("SELECT html FROM ops.delivery_reports")).scalar_one()
    assert 0 < len(risk) <= in_flight
    assert risk["p_late"].between(0, 1).all()
    assert (risk["at_risk"] == (risk["p_late"] > stored.threshold)).all()
    assert set(risk["model_version"]) == {stored.model_version}
    # The model lives in PostgreSQL and scores from there.
    assert DelayModel.from_bytes(bytes(stored.model)).version == stored.model_version
    for figure in FIGURES:
        assert f"data-figure='{figure}'" in report
    _buffalo_report_writes_and_serves_the_latest_report(pg_url, tmp_path, report)

    # A day later: the model (younger than BUFFALO_MODEL_RETRAIN_HOURS) is kept, the orders
    # in flight are rescored with it, the report is rendered again.
    running.sandbox.advance(DAY)
    # (The check judges the kept model again, so it would block again had it blocked before.)
    second = run(running, pg_url, instance, ALL if beats else UNCHECKED_ANALYTICS)
    assert second.success
    assert metadata_of(second, "delay_model")["retrained"] is False
    with engine.connect() as connection:
        rescored = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        assert _count(connection, "ops.delay_models") == 1
        assert _count(connection, "ops.delivery_reports") == 2
    assert rescored["scored_at"].min() > risk["scored_at"].max()
    assert set(rescored["model_version"]) == {stored.model_version}

    # Asked to retrain: a new version is stored and scores (without the check: the new
    # model's verdict is as date-dependent as the first one's).
    retrain = {"ops": {"delay_model": {"config": {"retrain": True}}}}
    third = run(running, pg_url, instance, UNCHECKED_ANALYTICS, run_config=retrain)
    assert third.success
    retrained = metadata_of(third, "delay_model")
    assert retrained["retrained"] is True and retrained["model_version"] != stored.model_version
    with engine.connect() as connection:
        assert _count(connection, "ops.delay_models") == 2
        versions = connection.execute(
            sa.text("SELECT DISTINCT model_version FROM analytics.order_delay_risk")
        )
        assert versions.scalars().all() == [retrained["model_version"]]


def _buffalo_report_writes_and_serves_the_latest_report(pg_url: str, tmp_path: Path, stored: str) -> None:
    env = {**os.environ, "BUFFALO_PG_URL": pg_url}
    path = tmp_path / "report.html"
    written = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "report", "--output", str(path)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == str(path) and path.read_text() == stored
    server = subprocess.Popen(
        [sys.executable, "-m", "buffalo_assets.cli", "report", "--serve", "--port", "0"],
        env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
        assert url, "buffalo report --serve must say where it serves, on loopback"
        with urllib.request.urlopen(url.group(0), timeout=30) as response:  # noqa: S310 - our local server
            assert response.read().decode() == stored
    finally:
        stop_group(server)


def test_a_world_without_delivered_history_materializes_with_a_note_and_no_risk_scores(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, analytics_store: sa.Engine
) -> None:
    running = start_sandbox(orders=200, history_days=2)
    result = run(running, pg_url, instance, ALL)
    assert result.success
    model_meta = metadata_of(result, "delay_model")
    assert model_meta["trained"] is False and "not enough history" in model_meta["note"]
    assert check_results(result)[CHECK]  # not judged, not failed
    assert "note" in metadata_of(result, "order_delay_risk")
    with analytics_store.connect() as connection:
        assert _count(connection, "analytics.order_status_now") == 200
        assert _count(connection, "analytics.order_delay_risk") == 0
        assert _count(connection, "ops.delivery_reports") == 1


def test_a_change_in_core_makes_automation_request_every_analytics_asset(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, analytics_store: sa.Engine
) -> None:
    # The assets as definitions.py wires them; importing that module here would freeze its
    # settings for later tests of this session.
    running = start_sandbox(orders=20, start=time.time() - 10 * DAY)
    defs = Definitions(
        assets=[*INGESTION, transform_orders, *ANALYTICS_ASSETS], resources=resources(running, pg_url)
    )
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert run(running, pg_url, instance, EVERYTHING).success  # ingest + core, no analytics
    after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    for key in ANALYTICS_KEYS:
        assert after.get_num_requested(AssetKey(key)) == 1, key
