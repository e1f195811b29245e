"""The analytics layer end to end: sandbox over HTTP, real PostgreSQL, a real Dagster instance.

One materialization of everything (what job `refresh_all` runs) fills every analytics
table. The delay model's gate is held to its contract on sandbox worlds with a fixed start
(their clock does not move with the date, and a model is trained as of the newest event
it sees), so every verdict here is the same on every run: a world where the challenger
wins (it becomes the champion and scores), and a world where nothing predicts lateness
(the challenger is rejected, never scores, the champion keeps scoring, and everything that
needs no model still flows).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    evaluate_automation_conditions,
)

from buffalo_assets.analytics.kpis import DELIVERY_KPI_COLUMNS, KPI_STAGES, LATE_SHARE_COLUMNS
from buffalo_assets.analytics.model import DELAY_RISK_COLUMNS, DelayModel, risk_threshold
from buffalo_assets.analytics.report import FIGURES
from buffalo_assets.analytics.status import STATUS_NOW_COLUMNS
from buffalo_assets.assets.analytics import ANALYTICS_ASSETS
from buffalo_assets.assets.customer_alerts import customer_alerts
from buffalo_assets.assets.stock import STOCK_ASSETS
from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.storage import model_store, tables
from tests.conftest import SandboxFactory
from tests.pipeline import (
    ANALYTICS,
    EVERYTHING,
    INGESTION,
    check_results,
    metadata_of,
    resources,
    run,
    stop_group,
    world_now,
)

DAY = 86_400.0
ALL = [*ANALYTICS, customer_alerts, *STOCK_ASSETS]
DATA_TABLES = (
    "raw.order_ids, raw.order_versions, ops.fetch_errors, ops.list_walks, core.clean_orders, "
    "core.order_items, core.order_events, ops.transform_errors, raw.order_observations, ops.gone_orders, "
    "ops.unstorable_payloads, analytics.order_stage_durations, analytics.order_status_now, "
    "analytics.delivery_kpis, analytics.delivery_late_shares, analytics.order_delay_risk, "
    "ops.delivery_reports, analytics.customer_alerts, analytics.inbound_stock, analytics.stock_cover, "
    "analytics.delay_predictions, analytics.delay_model_performance, analytics.delay_model_drift, "
    "ops.delay_retrain_requests"
)
GATE = "delay_model_gate"
ANALYTICS_KEYS = (
    "order_stage_durations", "order_status_now", "delivery_kpis", "delivery_late_shares", "delay_model",
    "order_delay_risk", "delay_predictions", "delay_model_drift", "delay_model_performance",
    "delivery_report", "calendar",
)  # fmt: skip
# The columns the issues fix for analytics.order_delay_risk, in order, with their types.
RISK_COLUMNS = [
    ("order_id", "text"),
    ("promised_delivery_at", "timestamp with time zone"),
    ("expected_delivery_at", "timestamp with time zone"),
    ("p_late", "double precision"),
    ("at_risk", "boolean"),
    ("scored_at", "timestamp with time zone"),
    ("model_version", "text"),
    ("expected_low_at", "timestamp with time zone"),
    ("expected_high_at", "timestamp with time zone"),
    ("unscored_reason", "text"),
    ("reasons", "text"),
]
# Worlds whose clock starts at a fixed moment: the same orders and the same verdict on any date.
START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC).timestamp()
AT_START = datetime.fromtimestamp(START, UTC).isoformat()  # their analytics run at their clock
WINNING = {"orders": 1_500, "history_days": 90, "seed": 7, "start": START}  # customs: a model wins
CHANCE = {**WINNING, "delay_process": "chance"}  # nothing but chance makes a parcel late


@pytest.fixture
def analytics_store(empty_store: sa.Engine) -> sa.Engine:
    """No data and no delay models from earlier tests."""
    with empty_store.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {DATA_TABLES}, ops.delay_models"))
    return empty_store


def _count(connection: sa.Connection, table: str, where: str = "true") -> int:
    return int(connection.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one())


def _models(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(
            "SELECT model_version, status, note, promoted_at, retired_at, model IS NOT NULL AS has_model "
            "FROM ops.delay_models ORDER BY trained_at",
            connection,
        )


def _gate(result: ExecuteInProcessResult):  # noqa: ANN202 - Dagster's evaluation type
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == GATE)


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


def test_a_winning_challenger_becomes_the_champion_scores_and_later_runs_keep_it(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    analytics_store: sa.Engine,
    tmp_path: Path,
) -> None:
    running = start_sandbox(**WINNING)
    first = run(running, pg_url, instance, ALL, as_of=world_now(running))
    assert first.success
    verdict = _gate(first)
    assert verdict.passed and verdict.metadata["judged"].value, verdict.description
    assert verdict.metadata["status"].value == "champion"
    assert "promoted: beats the baseline" in str(verdict.description)
    model_meta = metadata_of(first, "delay_model")
    assert model_meta["status"] == "champion" and model_meta["trained"] is True
    for who in ("model", "baseline"):
        for figure in ("auc", "ap", "brier", "precision", "recall", "f1", "mae_days"):
            assert f"{who}_{figure}" in model_meta
    assert model_meta["model_auc"] > model_meta["baseline_auc"] and model_meta["test_orders"] >= 100
    # Trained as of the world's newest event (its clock stopped at START), not of today.
    assert model_meta["as_of"] <= datetime.fromtimestamp(START, UTC).isoformat()

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
        assert [tuple(c) for c in risk_columns] == RISK_COLUMNS
        risk = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        in_flight = _count(
            connection,
            "analytics.order_status_now",
            "stage NOT IN ('delivered', 'returned', 'cancelled', 'lost')",
        )
        stored = connection.execute(
            sa.text("SELECT model_version, model FROM ops.delay_models WHERE status = 'champion'")
        ).one()
        report = connection.execute(sa.text("SELECT html FROM ops.delivery_reports")).scalar_one()
    # The BI date table: every day of the orders' years and the next, SA holidays named, and
    # every weekly KPI period is one of its weeks.
    with engine.connect() as connection:
        days = pd.read_sql_query("SELECT * FROM analytics.bi_calendar ORDER BY date", connection)
    assert str(days["date"].iloc[0]) == "2026-01-01" and str(days["date"].iloc[-1]) == "2027-12-31"
    reconciliation = days[days["date"].astype(str) == "2026-12-16"].iloc[0]
    assert reconciliation["holiday_name"] == "Day of Reconciliation" and not reconciliation["is_business_day"]
    weeks = set(kpis.loc[kpis["grain"] == "week", "period_start"].astype(str))
    assert weeks <= set(days["week_start"].astype(str))
    assert 0 < len(risk) == in_flight
    assert risk["p_late"].between(0, 1).all() and risk["unscored_reason"].isna().all()
    assert (risk["at_risk"] == (risk["p_late"] >= risk_threshold(2.0))).all()
    assert set(risk["model_version"]) == {stored.model_version}
    # The model lives in PostgreSQL and scores from there.
    assert DelayModel.from_bytes(bytes(stored.model)).version == stored.model_version
    for figure in FIGURES:
        assert f"data-figure='{figure}'" in report
    assert "promoted" in report and "Reliability" in report
    _buffalo_report_writes_and_serves_the_latest_report(pg_url, tmp_path, report)

    # Half a day later (the world's clock): no training (the newest is younger than
    # BUFFALO_MODEL_RETRAIN_HOURS); the champion rescores what is in flight, and the gate says so.
    running.sandbox.advance(DAY / 2)
    second = run(running, pg_url, instance, ALL, as_of=world_now(running))
    assert second.success and metadata_of(second, "delay_model")["retrained"] is False
    kept = _gate(second)
    assert kept.passed and f"champion {stored.model_version} scores" in str(kept.description)
    with engine.connect() as connection:
        rescored = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        assert _count(connection, "ops.delay_models") == 1
        assert _count(connection, "ops.delivery_reports") == 2
    assert rescored["scored_at"].min() > risk["scored_at"].max()
    assert set(rescored["model_version"]) == {stored.model_version}

    # Asked to retrain: a challenger is judged against the champion too; whichever wins
    # scores, the other is kept with the reason, and there is never more than one champion.
    third = run(
        running, pg_url, instance, ALL, as_of=world_now(running),
        run_config={"ops": {"delay_model": {"config": {"retrain": True}}}},
    )  # fmt: skip
    assert third.success and metadata_of(third, "delay_model")["retrained"] is True
    models = _models(engine)
    assert len(models) == 2 and (models["status"] == "champion").sum() == 1
    challenger = models.iloc[-1]
    assert "vs champion" in challenger["note"], challenger["note"]
    champion = models[models["status"] == "champion"].iloc[0]
    if challenger["status"] == "champion":
        old = models.iloc[0]
        assert old["status"] == "retired" and old["retired_at"] == challenger["promoted_at"]
    with engine.connect() as connection:
        versions = connection.execute(
            sa.text("SELECT DISTINCT model_version FROM analytics.order_delay_risk")
        )
        assert versions.scalars().all() == [champion["model_version"]]


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


def _empty_the_data(engine: sa.Engine) -> None:
    """The account's data gone (a new sandbox world follows); the delay models stay."""
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {DATA_TABLES}"))


def _nothing_needs_the_model(engine: sa.Engine) -> None:
    """KPIs, an alert that needs no model, inbound stock and the report were all made."""
    with engine.connect() as connection:
        assert _count(connection, "analytics.delivery_kpis") > 0
        reasons = set(
            connection.execute(sa.text("SELECT DISTINCT reason FROM analytics.customer_alerts")).scalars()
        )
        # (Every order in flight is past its promise here: `late` before `stuck` in the cool-down.)
        assert "late" in reasons, reasons
        assert _count(connection, "analytics.inbound_stock", "state = 'in_flight'") > 0
        assert _count(connection, "ops.delivery_reports") >= 1


def test_a_losing_challenger_never_scores_while_the_champion_and_everything_else_carry_on(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, analytics_store: sa.Engine
) -> None:
    engine = analytics_store
    # 1. Nothing predicts lateness and there is no champion: the challenger is rejected, the
    #    orders in flight are listed unscored with the reason, and nothing waits for a model.
    first = run(start_sandbox(**CHANCE), pg_url, instance, ALL, as_of=AT_START)
    assert first.success
    verdict = _gate(first)
    assert not verdict.passed and verdict.severity == AssetCheckSeverity.WARN
    assert verdict.metadata["judged"].value and verdict.metadata["status"].value == "rejected"
    assert "does not clearly beat the baseline" in str(verdict.description)
    assert "no champion" in str(verdict.description)
    with engine.connect() as connection:
        risk = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        alerted = _count(connection, "analytics.customer_alerts", "reason = 'at_risk'")
    assert len(risk) > 0 and risk["p_late"].isna().all() and risk["model_version"].isna().all()
    assert risk["unscored_reason"].str.contains("rejected").all()
    assert alerted == 0
    _nothing_needs_the_model(engine)
    assert _models(engine)["status"].tolist() == ["rejected"]

    # 2. A world where the model wins (asked to train now: a rejected challenger otherwise
    #    holds the next training back for BUFFALO_MODEL_RETRAIN_HOURS): the challenger wins.
    _empty_the_data(engine)
    retrain = {"ops": {"delay_model": {"config": {"retrain": True}}}}
    second = run(start_sandbox(**WINNING), pg_url, instance, ALL, run_config=retrain, as_of=AT_START)
    assert second.success and _gate(second).passed
    champion = _models(engine).iloc[-1]
    assert champion["status"] == "champion"

    # 3. Back to the chance world, a new challenger: rejected, and the champion keeps scoring.
    _empty_the_data(engine)
    third = run(start_sandbox(**CHANCE), pg_url, instance, ALL, run_config=retrain, as_of=AT_START)
    assert third.success
    verdict = _gate(third)
    assert not verdict.passed and verdict.severity == AssetCheckSeverity.WARN
    assert f"champion {champion['model_version']} scores" in str(verdict.description)
    models = _models(engine)
    assert models["status"].tolist() == ["rejected", "champion", "rejected"]
    with engine.connect() as connection:
        risk = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
    assert len(risk) > 0 and set(risk["model_version"]) == {champion["model_version"]}
    assert risk["p_late"].notna().all()
    _nothing_needs_the_model(engine)


def test_a_world_without_delivered_history_is_not_judged_and_lists_its_orders_unscored(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, analytics_store: sa.Engine
) -> None:
    running = start_sandbox(orders=200, history_days=2)
    result = run(running, pg_url, instance, ALL)
    assert result.success
    model_meta = metadata_of(result, "delay_model")
    assert model_meta["trained"] is False and "not enough history" in model_meta["note"]
    verdict = _gate(result)
    # Not judged is never a pass.
    assert not check_results(result)[GATE] and verdict.severity == AssetCheckSeverity.WARN
    assert str(verdict.description).startswith("not judged") and not verdict.metadata["judged"].value
    with analytics_store.connect() as connection:
        assert _count(connection, "analytics.order_status_now") == 200
        risk = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        assert _count(connection, "ops.delivery_reports") == 1
        status = connection.execute(sa.text("SELECT status FROM ops.delay_models")).scalars().all()
    assert status == ["untrained"]
    assert len(risk) > 0 and risk["p_late"].isna().all()
    assert risk["unscored_reason"].str.contains("not enough history").all()


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


def test_a_champion_promoted_by_another_run_is_never_replaced_unseen(analytics_store: sa.Engine) -> None:
    engine = analytics_store
    now = datetime.now(UTC)

    def promote(version: str, replaces: str | None) -> None:
        model_store.record(
            engine, model_version=version, trained_at=now, status="champion", note="promoted",
            metrics={"auc": float("nan")}, run_id=None, replaces=replaces,
        )  # fmt: skip

    promote("a", None)
    # "b" was judged while there was no champion; "a" came in meanwhile: b is not stored.
    with pytest.raises(model_store.ChampionChanged, match="b was judged against champion none, but a"):
        promote("b", None)
    promote("c", "a")
    models = _models(engine)
    assert models[["model_version", "status"]].values.tolist() == [["a", "retired"], ["c", "champion"]]
    assert models.iloc[0]["retired_at"] == models.iloc[1]["promoted_at"]
