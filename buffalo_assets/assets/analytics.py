"""Analytics: stage durations, where every order is now, delivery KPIs, the delay-risk model,
the risk of every order in flight, and a report people look at.

The computing is plain Python in `buffalo_assets/analytics/`; these assets read `core`
through the Postgres IO manager (only the columns they need), call it, and hand the result
back to the IO manager, which writes the declared tables. They are eager: whenever `core`
changes (the `core_automation` sensor, or job `refresh_all`), they follow.

Small worlds are normal here (a new deployment, the demo, tests): without enough delivered
history `delay_model` records an `untrained` row saying why, its check `delay_model_gate`
warns "not judged", and `order_delay_risk` lists the orders in flight unscored with the same
reason; no run fails for it. A fault (a bug, a broken input) fails the asset with its error.
The stages of tracking events are read as learned from the account's own data
(`analytics/event_stages.py`), here and in the delay model alike.
scikit-learn and matplotlib are imported inside the analytics functions, never at import.
"""

import math
import pickle
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AutomationCondition,
    Config,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import Field

from buffalo_assets import settings
from buffalo_assets.analytics.durations import STAGE_DURATION_COLUMNS, order_stage_durations
from buffalo_assets.analytics.kpis import (
    DELIVERY_KPI_COLUMNS,
    LATE_SHARE_COLUMNS,
    delivery_kpis,
    late_share_by,
)
from buffalo_assets.analytics.model import DELAY_RISK_COLUMNS
from buffalo_assets.analytics.status import STATUS_NOW_COLUMNS, order_status_now
from buffalo_assets.assets.ingestion import OWNERS
from buffalo_assets.storage import model_store, tables
from buffalo_assets.storage.io_manager import DataFrame, column_schema
from buffalo_assets.storage.resource import PostgresResource

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

GROUP = "analytics"
KINDS = {"postgres", "pandas"}
# What the analytics read of core: nothing personal (no address columns).
ORDER_COLUMNS = [
    "order_id",
    "stage",
    "status_text",
    "created_at",
    "delivered_at",
    "province",
    "weight_kg",
    "volumetric_weight_kg",
    "declared_value_zar",
    "duty_zar",
    "duty_status",
]
EVENT_COLUMNS = ["order_id", "event_at", "stage", "description"]
# Below this a delay model is not trained (too few outcomes to learn from); the row and the
# metadata say so. (Too few test orders to judge a trained one: analytics/gate.py.)
MIN_DELIVERED_ORDERS = 150
REPORT_PORT = 8766


def _in(key: str, columns: list[str] | None = None, *, key_order: bool = False) -> AssetIn:
    metadata: dict[str, Any] = {"columns": columns} if columns else {}
    if key_order:  # rows in primary-key order (the IO manager's `key_order`)
        metadata["key_order"] = True
    return AssetIn(key=AssetKey(key), metadata=metadata or None)


def _table_metadata(table: sa.Table, *, preview: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "dagster/table_name": f"{table.schema}.{table.name}",
        "dagster/column_schema": column_schema(table),
        **({"preview_rows": 5} if preview else {}),
        **extra,
    }


def _common() -> dict[str, Any]:
    return {
        "group_name": GROUP,
        "owners": OWNERS,
        "io_manager_key": "postgres_io",
        "automation_condition": AutomationCondition.eager(),
    }


def _now() -> datetime:
    return datetime.now(UTC)


# -- stage durations, status now ----------------------------------------------------------


@asset(
    name="order_stage_durations",
    ins={
        "order_events": _in("order_events", EVENT_COLUMNS),
        "clean_orders": _in("clean_orders", ["order_id", "stage"]),
    },
    kinds=KINDS,
    metadata=_table_metadata(tables.order_stage_durations),
    **_common(),
)
def order_stage_durations_asset(
    context: AssetExecutionContext, order_events: DataFrame, clean_orders: DataFrame
) -> Output:
    """Every stage each order passed through, in journey order: when it entered and left the
    stage and the hours it spent there. Consecutive tracking events of the same stage are one
    visit; the stage an order is in now is open (`is_open`) and ends at the time of the run;
    delivered, returned, cancelled and lost are visits of zero hours. Stage names are the
    vocabulary's (`orders/vocabulary.py`). An event's stage is learned from the account's own
    data: which stage an order's status names while a text is its newest event (metadata
    `event_stages` counts the events by how their stage was decided), so texts worded otherwise,
    or in Chinese, still have stages where `core`'s keyword rules say `unknown`."""
    from buffalo_assets.analytics.event_stages import learn_event_stages, relabel

    as_of = _now()
    learned = learn_event_stages(clean_orders, order_events)
    events = relabel(order_events, learned)
    durations = order_stage_durations(events, as_of)[list(STAGE_DURATION_COLUMNS)]
    return Output(
        durations,
        metadata={
            "orders": MetadataValue.int(int(durations["order_id"].nunique())),
            "open_visits": MetadataValue.int(int(durations["is_open"].sum())),
            "event_stages": MetadataValue.json(learned.summary()),
            "as_of": as_of.isoformat(),
        },
    )


@asset(
    name="order_status_now",
    ins={
        "clean_orders": _in("clean_orders", ORDER_COLUMNS),
        "order_stage_durations": _in("order_stage_durations", ["order_id", "stage_seq", "entered_at"]),
    },
    kinds=KINDS,
    metadata=_table_metadata(tables.order_status_now),
    **_common(),
)
def order_status_now_asset(
    context: AssetExecutionContext, clean_orders: DataFrame, order_stage_durations: DataFrame
) -> Output:
    """One row per order: its stage now, days since it was created and days in its current
    stage, the promised delivery date, when it was delivered, `late_by_days` (negative when
    early) and `is_late`, its province, weight, declared value and duty owed/paid.

    Buffalo's API sends no promised date: the promise is BUFFALO_PROMISE_BUSINESS_DAYS
    (default 10) South African business days after creation, weekends and public holidays
    excluded, at the creation's clock time. No address column: personal data stays in core."""
    as_of = _now()
    promise_days = settings.load().promise_business_days
    status = order_status_now(clean_orders, order_stage_durations, as_of, promise_days)
    status = status[list(STATUS_NOW_COLUMNS)]
    delivered = status["delivered_at"].notna()
    late_share = (
        status.loc[delivered, "is_late"].fillna(False).astype(bool).mean() if delivered.any() else None
    )
    return Output(
        status,
        metadata={
            "promise_business_days": MetadataValue.int(promise_days),
            "delivered": MetadataValue.int(int(delivered.sum())),
            "late_share_of_delivered": MetadataValue.float(round(float(late_share), 4))
            if late_share is not None
            else MetadataValue.text("no deliveries yet"),
            "late_now": MetadataValue.int(int(status["is_late"].fillna(False).astype(bool).sum())),
            "as_of": as_of.isoformat(),
        },
    )


# -- KPIs ------------------------------------------------------------------------------------


@multi_asset(
    name="delivery_kpis_and_late_shares",
    outs={
        "delivery_kpis": AssetOut(
            description=(
                "Daily and weekly delivery KPIs (SAST days, ISO weeks from Monday): orders created "
                "and delivered, on-time share, median and 90th-percentile door-to-door days, median "
                "hours per journey stage (customs first), and orders stuck (in flight with no "
                "tracking event for BUFFALO_STUCK_DAYS days) at the period's end."
            ),
            kinds=KINDS,
            metadata=_table_metadata(tables.delivery_kpis),
            **_common(),
        ),
        "delivery_late_shares": AssetOut(
            description=(
                "Late share of delivered orders per day and week, by province and by inferred delay "
                "cause (the journey stage that overran its typical hours the most; `unclear` when "
                "none did). One row per period, dimension and value."
            ),
            kinds=KINDS,
            metadata=_table_metadata(tables.delivery_late_shares),
            **_common(),
        ),
    },
    ins={
        "order_status_now": _in("order_status_now"),
        "order_stage_durations": _in("order_stage_durations"),
        "order_events": _in("order_events", ["order_id", "event_at"]),
    },
    can_subset=False,
)
def delivery_kpis_and_late_shares(
    context: AssetExecutionContext,
    order_status_now: DataFrame,
    order_stage_durations: DataFrame,
    order_events: DataFrame,
) -> Iterator[Output]:
    """Both KPI tables from the same status and stage durations, so they always agree."""
    as_of = _now()
    stuck_days = settings.load().stuck_days
    kpis = delivery_kpis(order_status_now, order_stage_durations, as_of, stuck_days, events=order_events)
    kpis = kpis.reindex(columns=list(DELIVERY_KPI_COLUMNS))
    shares = late_share_by(order_status_now, order_stage_durations).reindex(columns=list(LATE_SHARE_COLUMNS))
    weeks = kpis[kpis["grain"] == "week"]
    latest = weeks.sort_values("period_start").iloc[-1] if len(weeks) else None
    yield Output(
        kpis,
        output_name="delivery_kpis",
        metadata={
            "stuck_days": MetadataValue.float(float(stuck_days)),
            "weeks": MetadataValue.int(len(weeks)),
            "orders_stuck_now": MetadataValue.int(int(latest["orders_stuck"]) if latest is not None else 0),
            "as_of": as_of.isoformat(),
        },
    )
    yield Output(shares, output_name="delivery_late_shares", metadata={"as_of": as_of.isoformat()})


# -- the delay model -------------------------------------------------------------------------


class DelayModelConfig(Config):
    retrain: bool = Field(
        default=False,
        description="Train a challenger even if the newest training is younger than "
        "BUFFALO_MODEL_RETRAIN_HOURS",
    )


def _figure(value: Any) -> MetadataValue:
    return (
        MetadataValue.float(round(float(value), 4))
        if value is not None and math.isfinite(float(value))
        else MetadataValue.text("n/a")
    )


def _figures(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Model and baseline test measures as flat metadata entries."""
    return {
        f"{who}_{name}": _figure(evaluation.get(who, {}).get(name))
        for who in ("model", "baseline")
        for name in ("auc", "ap", "brier", "precision", "recall", "f1", "mae_days")
    }


def training_as_of(events: "pd.DataFrame", now: datetime) -> datetime:
    """The newest tracking event at or before `now` (else `now`): the moment a model is trained as of.

    Its test window is then the last days the data cover, so a feed that stopped a while
    ago, or a sandbox world that ended months ago, is still judged on its own last days.
    """
    at = (
        pd.to_datetime(events["event_at"], utc=True)
        if len(events)
        else pd.Series(dtype="datetime64[ns, UTC]")
    )
    newest = at[at <= pd.Timestamp(now)].max()
    return now if pd.isna(newest) else newest.to_pydatetime()


def _load_champion(row: model_store.ModelRow | None) -> tuple[Any, str | None]:
    """The champion's model, or None and why this release cannot read its bytes.

    Only the errors of reading a pickle written by other code are caught (a class or module
    renamed, another library version); any other error fails the asset.
    """
    from buffalo_assets.analytics.model import DelayModel

    if row is None or row.model is None:
        return None, None
    try:
        return DelayModel.from_bytes(row.model), None
    except (pickle.UnpicklingError, ImportError, AttributeError) as exc:
        return None, f"cannot be read by this release ({type(exc).__name__}: {exc})"


@asset(
    name="delay_model",
    # In key order: the seeded sampling of training moments follows row positions, so the
    # same stored data must arrive in the same order to train the same model.
    ins={
        "clean_orders": _in("clean_orders", ORDER_COLUMNS, key_order=True),
        "order_events": _in("order_events", EVENT_COLUMNS, key_order=True),
    },
    kinds={"scikit-learn", "postgres"},
    metadata=_table_metadata(tables.delay_models, preview=False, write_mode="append"),
    **_common(),
)
def delay_model(
    context: AssetExecutionContext,
    config: DelayModelConfig,
    clean_orders: DataFrame,
    order_events: DataFrame,
    postgres: PostgresResource,
) -> Output:
    """Trains a challenger delay model and lets the gate judge it: gradient boosting
    (scikit-learn) on what was known at each moment of past journeys (stage, time in it, age,
    time to the promise, province, mass and declared value once weighed, what the account's own
    tracking texts say, and how long each stage is taking lately), never the outcome. Event
    stages and text meanings are learned from the account's own data, not from fixed wording.

    Fitted on the oldest orders, calibrated on the next 14 days' (p_late is a probability), judged
    on the newest 14 days' orders at every day of their journeys from dispatch to 3 days before
    the promise. It is promoted to champion, and scores, only if it beats the naive baseline
    (median remaining time per stage) on AUC and average precision with bootstrap intervals,
    and the current champion is not clearly better; else it is kept as rejected, with the reason.
    Every training is a row in `ops.delay_models` (status, verdict, figures, the model's bytes).

    Trained when the newest training is older than BUFFALO_MODEL_RETRAIN_HOURS (default 24) or on
    config `retrain: true`; in between a run trains nothing and the champion keeps scoring."""
    from buffalo_assets.analytics.features import NotEnoughHistory, build_history
    from buffalo_assets.analytics.gate import judge
    from buffalo_assets.analytics.model import train_delay_model

    now = _now()
    current = settings.load()
    engine = postgres.get_engine()
    with engine.connect() as connection:
        champion = model_store.champion(connection)
        last = model_store.newest(connection, statuses=model_store.TRAININGS)
    if last is not None and not config.retrain:
        age_h = (now - last.trained_at).total_seconds() / 3600
        if age_h < current.model_retrain_hours:
            context.log.info(f"no training: the newest ({last.model_version}) is {age_h:.1f} hours old")
            return Output(None, metadata=_standing(champion, last, age_h))
    as_of = training_as_of(order_events, now)
    history = build_history(clean_orders, order_events, as_of, current.promise_business_days)
    delivered = int((~pd.isna(history.delivered_s)).sum())
    started = time.perf_counter()
    try:
        if delivered < MIN_DELIVERED_ORDERS:
            raise NotEnoughHistory(
                f"{delivered} delivered orders, at least {MIN_DELIVERED_ORDERS} are needed"
            )
        result = train_delay_model(history, false_alarm_cost=current.false_alarm_cost)
    except NotEnoughHistory as exc:
        note = f"not enough history to train: {exc}; order_delay_risk lists the orders in flight unscored"
        context.log.warning(note)
        version = f"untrained-{now:%Y%m%dT%H%M%SZ}-{context.run_id[:8]}"
        model_store.record(
            engine, model_version=version, trained_at=now, status="untrained", note=note,
            metrics={"delivered_orders": delivered}, run_id=context.run_id, as_of=as_of,
        )  # fmt: skip
        return Output(
            None,
            metadata={
                "model_version": version,
                "status": "untrained",
                "trained": MetadataValue.bool(False),
                "retrained": MetadataValue.bool(False),
                "judged": MetadataValue.bool(False),
                "delivered_orders": MetadataValue.int(delivered),
                "note": note,
                "champion": champion.model_version if champion else "none",
            },
        )
    champion_model, problem = _load_champion(champion)
    if problem is not None:
        context.log.warning(f"champion {champion.model_version if champion else ''} {problem}")
    verdict = judge(result, history, champion_model, champion.model_version if champion else None, problem)
    model = result.model
    evaluation = result.evaluation | {
        "verdict": {"status": verdict.status, "reason": verdict.reason, "judged": verdict.judged},
        "delivered_orders": delivered,
        "event_stages": history.stages.summary() if history.stages is not None else {},
    }
    model.evaluation = evaluation
    model_store.record(
        engine, model_version=model.version, trained_at=now, status=verdict.status, note=verdict.reason,
        metrics=evaluation, run_id=context.run_id, model=model.to_bytes(),
        threshold=float(evaluation["threshold"]), training_rows=model.training_rows, as_of=as_of,
        replaces=champion.model_version if champion else None,
    )  # fmt: skip
    (context.log.info if verdict.promoted else context.log.warning)(
        f"challenger {model.version} {verdict.reason}"
    )
    test = evaluation["test"]
    return Output(
        None,
        metadata={
            "model_version": model.version,
            "status": verdict.status,
            "verdict": verdict.reason,
            "trained": MetadataValue.bool(True),
            "retrained": MetadataValue.bool(True),
            "judged": MetadataValue.bool(verdict.judged),
            "champion": model.version
            if verdict.promoted
            else (champion.model_version if champion else "none"),
            "train_s": MetadataValue.float(round(time.perf_counter() - started, 2)),
            "as_of": as_of.isoformat(),
            "delivered_orders": MetadataValue.int(delivered),
            "training_rows": MetadataValue.int(int(model.training_rows)),
            "test_orders": MetadataValue.int(int(test["orders"])),
            "test_moments": MetadataValue.int(int(test["moments"])),
            "threshold": _figure(evaluation["threshold"]),
            "band_coverage": _figure(evaluation.get("band", {}).get("coverage")),
            "features_dropped": MetadataValue.json(evaluation["features"]["dropped"]),
            "event_stages": MetadataValue.json(evaluation["event_stages"]),
            **_figures(evaluation),
        },
    )


def _standing(
    champion: model_store.ModelRow | None, last: model_store.ModelRow, age_h: float
) -> dict[str, Any]:
    """Metadata of a run that trained nothing: the champion, and the newest training's verdict."""
    metadata: dict[str, Any] = {
        "model_version": champion.model_version if champion else "none",
        "champion": champion.model_version if champion else "none",
        "status": "kept" if champion else "no champion",
        "trained": MetadataValue.bool(champion is not None),
        "retrained": MetadataValue.bool(False),
        "newest_training": f"{last.model_version} ({last.status}, {age_h:.1f} hours ago): {last.note}",
        "model_age_hours": MetadataValue.float(round(age_h, 2)),
    }
    if champion is not None:
        metadata |= {
            "training_rows": MetadataValue.int(int(champion.training_rows)),
            "threshold": _figure(champion.threshold),
            **_figures(champion.metrics),
        }
    return metadata


@asset_check(
    asset=delay_model,
    name="delay_model_gate",
    # Not blocking: the gate is in delay_model itself (a challenger never scores before it is
    # judged), and nothing downstream should wait on it; this check reports the verdict.
    blocking=False,
    description=(
        "The gate's verdict on this run's challenger: passes when it was promoted (it beats the naive "
        "baseline on AUC and average precision with bootstrap intervals, and is not worse than the "
        "champion) or, when the run trained nothing, when a champion scores; a WARN failure when it "
        "was rejected (the champion keeps scoring) or could not be judged (not enough history), "
        "never a pass for a model nobody judged."
    ),
)
def delay_model_gate(context: AssetCheckExecutionContext, postgres: PostgresResource) -> AssetCheckResult:
    with postgres.get_engine().connect() as connection:
        mine = model_store.newest(connection, run_id=context.run.run_id)
        champion = model_store.champion(connection)
        newest = mine or model_store.newest(connection)
    return gate_result(mine, champion, newest)


def gate_result(
    mine: model_store.ModelRow | None,
    champion: model_store.ModelRow | None,
    newest: model_store.ModelRow | None,
) -> AssetCheckResult:
    """The check's result from this run's training (if any), the champion and the newest training."""
    scoring = f"champion {champion.model_version} scores" if champion else "no champion: nothing is scored"
    if mine is None:
        if champion is not None:
            return AssetCheckResult(
                passed=True,
                description=f"no training in this run; {scoring} ({champion.note})",
                metadata={"judged": True, "status": "kept", "champion": champion.model_version},
            )
        reason = f"{newest.model_version}: {newest.note}" if newest else "delay_model has not run"
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"not judged: {scoring}; newest training {reason}",
            metadata={"judged": False, "status": "no champion", "champion": "none"},
        )
    judged = mine.status in ("champion", "rejected")
    metrics = mine.metrics or {}
    figures = {
        f"{who}_{name}": metrics[who][name]
        for who in ("model", "baseline")
        for name in ("auc", "ap", "brier")
        if metrics.get(who, {}).get(name) is not None
    }
    metadata = {
        "judged": judged,
        "status": mine.status,
        "model_version": mine.model_version,
        "champion": champion.model_version if champion else "none",
        **figures,
    }
    if mine.status == "champion":
        return AssetCheckResult(
            passed=True, description=f"{mine.model_version} {mine.note}", metadata=metadata
        )
    prefix = "" if judged else "not judged: "
    note = mine.note or ""
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.WARN,
        description=f"{prefix}{mine.model_version} {note.removeprefix('not judged: ')}; {scoring}",
        metadata=metadata,
    )


@asset(
    name="order_delay_risk",
    ins={
        "clean_orders": _in("clean_orders", ORDER_COLUMNS),
        "order_events": _in("order_events", EVENT_COLUMNS),
    },
    deps=[delay_model],
    kinds={"scikit-learn", "postgres"},
    metadata=_table_metadata(tables.order_delay_risk),
    **_common(),
)
def order_delay_risk(
    context: AssetExecutionContext,
    clean_orders: DataFrame,
    order_events: DataFrame,
    postgres: PostgresResource,
) -> Output:
    """Every order in flight, scored by the champion delay model: `p_late` (the calibrated
    chance of arriving after the promise), `at_risk` (p_late at or above the alert threshold of
    BUFFALO_FALSE_ALARM_COST), the promised and expected delivery dates (with a 10th-90th
    percentile range), when it was scored and by which `model_version`. An order already past
    its promise has p_late 1. With no champion yet, every order in flight is still listed,
    with p_late empty and `unscored_reason` saying why."""
    from buffalo_assets.analytics.features import build_history, in_flight_features
    from buffalo_assets.analytics.model import (
        DelayModel,
        risk_threshold,
        score_in_flight,
        unscored_in_flight,
    )

    as_of = _now()
    current = settings.load()
    with postgres.get_engine().connect() as connection:
        champion = model_store.champion(connection)
        newest = model_store.newest(connection)
    history = build_history(clean_orders, order_events, as_of, current.promise_business_days)
    features = in_flight_features(history)
    threshold = risk_threshold(current.false_alarm_cost)
    if champion is None or champion.model is None:
        reason = "no champion delay model yet: " + (
            f"the newest training, {newest.model_version}, was {newest.status} ({newest.note})"
            if newest
            else "delay_model has not run"
        )
        context.log.warning(reason)
        risk = unscored_in_flight(features, reason, as_of)
        metadata: dict[str, Any] = {"note": reason, "model_version": "none"}
    else:
        model = DelayModel.from_bytes(champion.model)
        risk = score_in_flight(model, history, features, threshold, as_of)
        metadata = {"model_version": model.version}
    return Output(
        risk[list(DELAY_RISK_COLUMNS)],
        metadata={
            **metadata,
            "threshold": MetadataValue.float(round(threshold, 4)),
            "in_flight": MetadataValue.int(len(risk)),
            "scored": MetadataValue.int(int(risk["p_late"].notna().sum())),
            "at_risk": MetadataValue.int(int(risk["at_risk"].fillna(False).astype(bool).sum())),
            "scored_at": as_of.isoformat(),
        },
    )


# -- the report ------------------------------------------------------------------------------


@asset(
    name="delivery_report",
    ins={
        "order_status_now": _in("order_status_now", ["order_id", "created_at", "delivered_at", "is_late"]),
        "delivery_kpis": _in("delivery_kpis"),
        "order_delay_risk": _in("order_delay_risk", ["order_id", "p_late", "at_risk"]),
    },
    deps=[delay_model],
    kinds={"matplotlib", "postgres"},
    metadata=_table_metadata(tables.delivery_reports, preview=False, write_mode="append"),
    **_common(),
)
def delivery_report(
    context: AssetExecutionContext,
    order_status_now: DataFrame,
    delivery_kpis: DataFrame,
    order_delay_risk: DataFrame,
    postgres: PostgresResource,
) -> Output:
    """A static HTML page people look at: door-to-door days of delivered orders, the late share
    by week, customs dwell by week, and the risk of what is in flight, with the gate's verdict
    on the newest delay model and the champion's test figures next to the baseline's (AUC,
    average precision and Brier score with intervals, a reliability table, how often the
    expected range held). Stored in `ops.delivery_reports`; `buffalo report` writes the latest
    to a file (or serves it on 127.0.0.1)."""
    from buffalo_assets.analytics.report import ModelStanding, render_report

    generated = _now()
    with postgres.get_engine().connect() as connection:
        champion = model_store.champion(connection)
        newest = model_store.newest(connection)
    standing = ModelStanding(
        champion=champion.model_version if champion else None,
        evaluation=champion.metrics if champion else None,
        newest=newest.model_version if newest else None,
        newest_status=newest.status if newest else None,
        newest_note=newest.note if newest else None,
    )
    page, figures = render_report(order_status_now, delivery_kpis, order_delay_risk, standing, generated)
    report_id = f"{generated:%Y%m%dT%H%M%SZ}-{context.run_id[:8]}"
    frame = pd.DataFrame(
        [{"report_id": report_id, "generated_at": generated, "html": page, "run_id": context.run_id}]
    )
    return Output(
        frame,
        metadata={
            "report": MetadataValue.md(
                f"Delivery report of {generated:%Y-%m-%d %H:%M} UTC ({len(page) // 1024} KiB, "
                f"{len(figures)} plots), stored in `ops.delivery_reports`. Open it with "
                f"`buffalo report` (writes the latest to a file and prints its path) or "
                f"`buffalo report --serve` ({report_url()})."
            ),
            "report_id": report_id,
            "report_url": MetadataValue.url(report_url()),
            "plots": ", ".join(figures),
            "html_kib": MetadataValue.int(len(page) // 1024),
        },
    )


def report_url(port: int = REPORT_PORT) -> str:
    """Where `buffalo report --serve` serves the latest report."""
    return f"http://127.0.0.1:{port}/"


ANALYTICS_ASSETS = [
    order_stage_durations_asset,
    order_status_now_asset,
    delivery_kpis_and_late_shares,
    delay_model,
    order_delay_risk,
    delivery_report,
]
ANALYTICS_CHECKS = [delay_model_gate]
