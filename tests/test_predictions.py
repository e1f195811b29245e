"""Predictions operations act on and audit: history, realized accuracy, drift, reasons, registry.

Two weeks of sandbox time, a day at a time, as operations live them: each day the sandbox
clock moves on, the platform ingests, transforms, scores the orders in flight (at the
sandbox's clock: BUFFALO_ANALYTICS_AS_OF), alerts customers through a real webhook, and
judges last week's calls against how the parcels ended. Midway, customs starts taking four
times as long for every parcel reaching the hub (a congestion jump ordered from the sandbox's
control API): the drift check must notice and ask for a retraining, which the next run
serves. Realized precision is counted again by hand from the sandbox's own truth.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import sklearn
import sqlalchemy as sa
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance

from buffalo_assets.analytics.model import DelayModel
from buffalo_assets.analytics.reasons import SEPARATOR
from buffalo_assets.assets.customer_alerts import customer_alerts, send_customer_alerts_job
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.storage.resource import PostgresResource
from tests.conftest import SandboxFactory
from tests.pipeline import ANALYTICS, metadata_of, run, world_now
from tests.test_analytics import DATA_TABLES, START, WINNING
from tests.test_customer_alerts import SECRET

DAY = 86_400.0
DAYS = 14
SURGE_DAY = 4  # before that day's run, customs starts taking SURGE_FACTOR times as long
SURGE_FACTOR = 4.0
WEEK_1 = date(2026, 6, 1)  # START is Monday 1 June 2026, 12:00 SAST
WEEK_2 = date(2026, 6, 8)
WEEK_2_STARTS = datetime(2026, 6, 7, 22, tzinfo=UTC)  # Monday 8 June, 00:00 SAST
ASSETS = [*ANALYTICS, customer_alerts]
DRIFT = "in_flight_drift"


@pytest.fixture
def store(empty_store: sa.Engine) -> sa.Engine:
    with empty_store.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {DATA_TABLES}, ops.delay_models"))
    return empty_store


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """A notification service that accepts every alert."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/alerts")
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_SECRET", SECRET)
    yield received
    server.shutdown()


def _read(engine: sa.Engine, query: str, **params: object) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(sa.text(query), connection, params=params)


def _check(result, name: str):  # noqa: ANN001, ANN202 - Dagster's result and evaluation types
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def _hand_count(calls: pd.DataFrame, truth: pd.DataFrame, now: pd.Timestamp) -> tuple[int, int]:
    """(called at risk and ended, of them late) from the sandbox's truth: late when delivered
    after the promise, or not delivered and the promise has passed (cancelled orders never end)."""
    merged = calls.merge(truth, on="order_id")
    delivered = pd.to_datetime(merged["delivered_at"], utc=True)
    promised = pd.to_datetime(merged["promised_delivery_at"], utc=True)
    cancelled = merged["final_stage"] == "cancelled"
    ended = ~cancelled & (delivered.notna() | (promised < now))
    late = ended & ((delivered > promised) | (delivered.isna() & (promised < now)))
    return int(ended.sum()), int(late.sum())


def test_two_weeks_of_daily_scoring_keep_history_judge_last_weeks_calls_and_catch_a_drift(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    store: sa.Engine,
    webhook: list[dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a request (drift, low precision) trains a new model in these two weeks.
    monkeypatch.setenv("BUFFALO_MODEL_RETRAIN_HOURS", "10000")
    running = start_sandbox(**WINNING)
    stored_per_day: list[int] = []
    scored_per_day: list[int] = []
    drift_checks: list[tuple[int, bool, str]] = []
    trained: list[tuple[int, str]] = []
    for day in range(DAYS):
        if day:
            running.sandbox.advance(DAY)
        if day == SURGE_DAY:
            running.sandbox.surge(SURGE_FACTOR)
        result = run(running, pg_url, instance, ASSETS, as_of=world_now(running))
        assert result.success, day
        stored_per_day.append(metadata_of(result, "delay_predictions")["stored"])
        scored_per_day.append(metadata_of(result, "order_delay_risk")["scored"])
        drift = _check(result, DRIFT)
        drift_checks.append((day, drift.passed, str(drift.description)))
        if not drift.passed:
            assert drift.severity == AssetCheckSeverity.WARN
        model_meta = metadata_of(result, "delay_model")
        if model_meta["retrained"]:
            trained.append((day, model_meta["trained_because"]))
        sent = send_customer_alerts_job.execute_in_process(
            instance=instance, resources={"postgres": PostgresResource(url=pg_url)}
        )
        assert sent.success, day
        if day == 0:
            _the_first_champion_is_registered_and_explains_its_calls(store)
    now = pd.Timestamp(running.sandbox.now, unit="s", tz="UTC")  # the last run's moment

    # 1. The history holds each change once: every stored row differs from the order's previous
    #    one, nothing was stored twice, and the newest row of each order is what it shows now.
    history = _read(store, "SELECT * FROM analytics.delay_predictions ORDER BY order_id, scored_at")
    assert len(history) == sum(stored_per_day) and not history.duplicated(["order_id", "scored_at"]).any()
    previous = history.groupby("order_id").shift(1)
    repeated = (
        previous["model_version"].notna()
        & (history["model_version"] == previous["model_version"])
        & (history["at_risk"] == previous["at_risk"])
        & ((history["p_late"] - previous["p_late"]).abs() < 0.01)
    )
    assert not repeated.any(), history[repeated].head()
    risk = _read(store, "SELECT * FROM analytics.order_delay_risk WHERE p_late IS NOT NULL")
    newest = history.groupby("order_id").tail(1).set_index("order_id").loc[risk["order_id"]]
    assert (newest["model_version"].to_numpy() == risk["model_version"].to_numpy()).all()
    assert (newest["at_risk"].to_numpy() == risk["at_risk"].to_numpy()).all()
    assert (np.abs(newest["p_late"].to_numpy() - risk["p_late"].to_numpy()) < 0.01).all()
    # Fewer rows than scorings: an unchanged prediction is not stored again.
    assert len(history) < sum(scored_per_day)

    # 2. Week 1's at-risk calls, judged: the platform's figures are the sandbox's truth counted by hand.
    truth = pd.DataFrame(SandboxControl(running.url).truth())
    calls = _read(
        store,
        "SELECT DISTINCT order_id, model_version, promised_delivery_at FROM analytics.delay_predictions "
        "WHERE at_risk AND scored_at < promised_delivery_at AND scored_at >= :start AND scored_at < :end",
        start=datetime(2026, 5, 31, 22, tzinfo=UTC),  # Monday 00:00 SAST
        end=datetime(2026, 6, 7, 22, tzinfo=UTC),
    )
    performance = _read(store, "SELECT * FROM analytics.delay_model_performance")
    week_1 = performance[
        (performance["week_start"] == WEEK_1)
        & (performance["source"] == "model")
        & (performance["dimension"] == "all")
    ]
    champion_1 = calls["model_version"].iloc[0]
    assert set(calls["model_version"]) == {champion_1}
    mine = week_1[week_1["model_version"] == champion_1].iloc[0]
    ended, late = _hand_count(calls.drop(columns="model_version"), truth, now)
    assert ended > 20, ended
    assert (mine["flagged"], mine["true_alarms"], mine["false_alarms"]) == (ended, late, ended - late)
    assert mine["precision"] == pytest.approx(late / ended)
    assert 0 <= mine["brier"] <= 1 and 0 <= mine["recall"] <= 1
    # Slices add up to the whole.
    slices = performance[(performance["week_start"] == WEEK_1) & (performance["source"] == "model")]
    for dimension in ("province", "weight_band"):
        part = slices[(slices["dimension"] == dimension) & (slices["model_version"] == champion_1)]
        assert part["flagged"].sum() == mine["flagged"] and part["orders"].sum() == mine["orders"]
    # The alerts sent in week 1, judged the same way.
    alerted = _read(
        store,
        "SELECT a.order_id, a.created_at, r.promised_delivery_at FROM analytics.customer_alerts a "
        "JOIN (SELECT DISTINCT order_id, promised_delivery_at FROM analytics.delay_predictions) r "
        "USING (order_id) "
        "WHERE a.reason = 'at_risk' AND a.sent_at IS NOT NULL AND a.created_at < :end",
        end=datetime(2026, 6, 7, 22, tzinfo=UTC),
    )
    alerts = performance[
        (performance["week_start"] == WEEK_1)
        & (performance["source"] == "alerts")
        & (performance["dimension"] == "all")
    ]
    assert len(alerted) > 0 and len(webhook) >= len(alerted)
    ended, late = _hand_count(alerted[["order_id", "promised_delivery_at"]], truth, now)
    assert (alerts["flagged"].sum(), alerts["true_alarms"].sum()) == (ended, late)

    # Week 2, counted by hand from the history as a person would read it: the predictions made
    # that week, and for each order the one still in force when the week began (made in week
    # 1, promise not yet passed), per model.
    starts, ends = pd.Timestamp(WEEK_2_STARTS), pd.Timestamp(WEEK_2_STARTS) + pd.Timedelta(days=7)
    before = history[history["scored_at"] < starts].groupby("order_id").tail(1)
    carried = before[before["promised_delivery_at"] > starts]
    during = history[
        (history["scored_at"] >= starts)
        & (history["scored_at"] < ends)
        & (history["scored_at"] < history["promised_delivery_at"])
    ]
    in_force = pd.concat([carried, during])
    assert len(carried) > 0  # the week has calls that were made before it
    flagged_2 = in_force.groupby(["order_id", "model_version"], as_index=False).agg(
        at_risk=("at_risk", "any"), promised_delivery_at=("promised_delivery_at", "first")
    )
    flagged_2 = flagged_2[flagged_2["at_risk"]]
    week_2 = performance[
        (performance["week_start"] == WEEK_2)
        & (performance["source"] == "model")
        & (performance["dimension"] == "all")
    ]
    ended, late = _hand_count(flagged_2[["order_id", "promised_delivery_at"]], truth, now)
    assert (week_2["flagged"].sum(), week_2["true_alarms"].sum()) == (ended, late)

    # 3. No drift while nothing changed; the customs jump is caught and retrained for.
    before = [d for d in drift_checks if d[0] < SURGE_DAY]
    assert all(passed for _, passed, _ in before), before
    after = [d for d in drift_checks if d[0] >= SURGE_DAY and not d[1]]
    assert after and "drift from the champion's training rows" in after[0][2], drift_checks
    requests = _read(store, "SELECT * FROM ops.delay_retrain_requests ORDER BY requested_at")
    assert len(requests) >= 1 and requests["reason"].iloc[0].startswith("drift: ")
    assert requests["requested_at"].iloc[0] >= pd.Timestamp(START + SURGE_DAY * DAY, unit="s", tz="UTC")
    served = requests["served_by"].iloc[0]
    assert served is not None and any(because.startswith("requested: drift") for _, because in trained), (
        trained
    )
    models = _read(store, "SELECT model_version, status, trained_because FROM ops.delay_models")
    assert models.set_index("model_version").loc[served, "trained_because"].startswith("requested: drift")

    # 4. The report shows realized accuracy over time; BI reads history, performance and drift.
    report = _read(store, "SELECT html FROM ops.delivery_reports ORDER BY generated_at DESC LIMIT 1")
    assert "data-figure='realized_accuracy'" in report["html"].iloc[0]
    for view in ("bi_delay_predictions", "bi_delay_model_performance", "bi_delay_model_drift"):
        assert len(_read(store, f"SELECT * FROM analytics.{view}")) > 0, view


def _the_first_champion_is_registered_and_explains_its_calls(engine: sa.Engine) -> None:
    row = _read(engine, "SELECT * FROM ops.delay_models WHERE status = 'champion'").iloc[0]
    model = DelayModel.from_bytes(bytes(row["model"]))
    assert list(row["feature_columns"]) == list(model.feature_columns)
    assert row["features_hash"] == hashlib.sha256(",".join(model.feature_columns).encode()).hexdigest()[:16]
    assert row["sklearn_version"] == sklearn.__version__ and row["numpy_version"] == np.__version__
    assert row["training_from"] < row["training_until"] < row["as_of"]
    assert row["promise_business_days"] == 10 and row["false_alarm_cost"] == 2.0
    assert row["trained_because"] == "first"

    # Every order at risk and not yet past its promise has its reasons, at most three, worded;
    # those past the promise say so; orders not at risk have none.
    risk = _read(engine, "SELECT * FROM analytics.order_delay_risk")
    at_risk = risk[risk["at_risk"].fillna(False)]
    due = at_risk["promised_delivery_at"] > at_risk["scored_at"]
    assert due.sum() > 0 and at_risk.loc[due, "reasons"].notna().all()
    assert (at_risk.loc[~due, "reasons"] == "past the promised date").all()
    assert risk.loc[~risk["at_risk"].fillna(False), "reasons"].isna().all()
    for reasons in at_risk.loc[due, "reasons"]:
        parts = reasons.split(SEPARATOR)
        assert 1 <= len(parts) <= 3 and len(set(parts)) == len(parts), reasons

    # The worklist: in flight by expected loss, with reasons and whether the customer was told.
    worklist = _read(engine, "SELECT * FROM analytics.bi_delay_worklist ORDER BY rank")
    assert len(worklist) == risk["p_late"].notna().sum()
    loss = worklist["p_late"] * worklist["declared_value_zar"].fillna(0)
    assert (np.diff(loss.to_numpy()) <= 1e-9).all()
    alerted = set(
        _read(
            engine,
            "SELECT order_id FROM analytics.customer_alerts WHERE sent_at IS NOT NULL "
            "AND reason IN ('at_risk', 'late', 'stuck', 'duty_unpaid')",
        )["order_id"]
    )
    assert alerted  # the webhook took them: the worklist says so
    assert (worklist["customer_alerted"] == worklist["order_id"].isin(alerted)).all()
    assert worklist.loc[worklist["at_risk"], "reasons"].notna().all()


def test_a_champion_trained_by_another_scikit_learn_is_refused_and_retrained(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, store: sa.Engine
) -> None:
    running = start_sandbox(**WINNING)
    at = world_now(running)
    assert run(running, pg_url, instance, ANALYTICS, as_of=at).success
    with store.begin() as connection:
        refused = connection.execute(
            sa.text("UPDATE ops.delay_models SET sklearn_version = '0.24.2' WHERE status = 'champion' "
                    "RETURNING model_version")
        ).scalar_one()  # fmt: skip
    # Scoring alone: the champion is refused with the reason; nothing is scored with it.
    scoring = AssetSelection.assets("order_delay_risk", "delay_predictions", "delay_model_drift")
    assert run(running, pg_url, instance, ANALYTICS, as_of=at, selection=scoring).success
    risk = _read(store, "SELECT * FROM analytics.order_delay_risk")
    assert len(risk) > 0 and risk["p_late"].isna().all() and risk["model_version"].isna().all()
    assert (
        risk["unscored_reason"]
        .str.contains(
            f"champion {refused} was trained with scikit-learn 0.24.2 and this installation has "
            f"{sklearn.__version__}"
        )
        .all()
    )
    assert risk["unscored_reason"].str.contains("retrain").all()
    # The next training does not wait for BUFFALO_MODEL_RETRAIN_HOURS: it says why it trained.
    again = run(running, pg_url, instance, ANALYTICS, as_of=at)
    assert again.success
    assert metadata_of(again, "delay_model")["trained_because"] == "champion unreadable"
    risk = _read(store, "SELECT * FROM analytics.order_delay_risk")
    # In this world a challenger beats the baseline (the first training was promoted): the new
    # champion scores every order, the refused one none.
    champion = _read(
        store, "SELECT model_version, sklearn_version FROM ops.delay_models WHERE status = 'champion'"
    )
    assert champion["model_version"].iloc[0] != refused
    assert champion["sklearn_version"].iloc[0] == sklearn.__version__
    assert risk["p_late"].notna().all() and set(risk["model_version"]) == {champion["model_version"].iloc[0]}
