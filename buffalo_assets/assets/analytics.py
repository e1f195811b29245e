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
from buffalo_assets.storage import model_store, prediction_store, tables
from buffalo_assets.storage.io_manager import DataFrame, column_schema
from buffalo_assets.storage.resource import PostgresResource

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

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
    """The analytics' moment: now, or BUFFALO_ANALYTICS_AS_OF (a replay, or a sandbox clock ahead)."""
    return settings.load().analytics_as_of or datetime.now(UTC)


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
    """The champion's model, or None and why this installation cannot use it.

    A model is loaded only by the scikit-learn version that trained it (the registry's
    `sklearn_version`, or the model's own record for rows of earlier releases): another
    version may unpickle it and predict something else without a word. Only the errors of
    unpickling there are caught (a class or module renamed, estimators whose state another
    version cannot take), and said with their type and message; the orders are then listed
    unscored with that reason, and `delay_model` retrains once.
    """
    import sklearn  # type: ignore[import-untyped]

    from buffalo_assets.analytics.model import DelayModel

    if row is None or row.model is None:
        return None, None
    mismatch = (
        f"was trained with scikit-learn {{trained}} and this installation has {sklearn.__version__}: "
        "a model is loaded only by the version that trained it; retrain (materialize delay_model, "
        "config retrain: true)"
    )
    if row.sklearn_version is not None and row.sklearn_version != sklearn.__version__:
        return None, mismatch.format(trained=row.sklearn_version)
    try:
        model = DelayModel.from_bytes(row.model)
    except (
        pickle.UnpicklingError,
        ImportError,
        AttributeError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        # What unpickling objects written by other code raises (a renamed class, estimators of
        # another scikit-learn whose state no longer fits); anything else is a fault.
        return None, f"cannot be read by this release ({type(exc).__name__}: {exc})"
    trained = model.libraries.get("scikit-learn")
    if trained is not None and trained != sklearn.__version__:
        return None, mismatch.format(trained=trained)
    return model, None


def registry_of(
    model: Any, history: Any, evaluation: Mapping[str, Any], current: settings.Settings, because: str
) -> dict[str, Any]:
    """The registry columns of a trained model's `ops.delay_models` row."""
    import hashlib

    columns = list(model.feature_columns)
    created = history.created_s[~np.isnan(history.created_s)]
    return {
        "feature_columns": columns,
        "features_hash": hashlib.sha256(",".join(columns).encode()).hexdigest()[:16],
        "sklearn_version": model.libraries.get("scikit-learn"),
        "numpy_version": model.libraries.get("numpy"),
        "training_from": datetime.fromtimestamp(float(created.min()), UTC) if len(created) else None,
        "training_until": datetime.fromisoformat(evaluation["validation_cut"]),
        "promise_business_days": current.promise_business_days,
        "false_alarm_cost": current.false_alarm_cost,
        "trained_because": because,
    }


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

    # When it is trained, and how old the newest training is, are wall-clock times; the data
    # are read as of the analytics' moment (BUFFALO_ANALYTICS_AS_OF replays move only that).
    now = datetime.now(UTC)
    current = settings.load()
    engine = postgres.get_engine()
    with engine.connect() as connection:
        champion = model_store.champion(connection)
        last = model_store.newest(connection, statuses=model_store.TRAININGS)
        request = prediction_store.open_request(connection)
    champion_model, problem = _load_champion(champion)
    if problem is not None:
        context.log.warning(f"champion {champion.model_version if champion else ''} {problem}")
    age_h = (now - last.trained_at).total_seconds() / 3600 if last is not None else math.inf
    because = (
        "asked" if config.retrain
        else "first" if last is None
        # Once: if that challenger lost, the usual schedule applies (no training every run).
        else "champion unreadable" if problem is not None and last.trained_because != "champion unreadable"
        else f"requested: {request['reason']}" if request is not None
        else "schedule" if age_h >= current.model_retrain_hours
        else None
    )  # fmt: skip
    if because is None and last is not None:
        context.log.info(f"no training: the newest ({last.model_version}) is {age_h:.1f} hours old")
        return Output(None, metadata=_standing(champion, last, age_h))
    context.log.info(f"training a challenger ({because})")
    as_of = training_as_of(order_events, _now())
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
            registry={"trained_because": because, "promise_business_days": current.promise_business_days},
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
        registry=registry_of(model, history, evaluation, current, because or "schedule"),
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
            "trained_because": because,
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


@multi_asset(
    name="score_orders_in_flight",
    outs={
        "order_delay_risk": AssetOut(
            description=(
                "Every order in flight, scored by the champion delay model: p_late (calibrated), "
                "at_risk, the promised and expected delivery dates with a 10th-90th percentile range, "
                "and for each order at risk its top reasons from the model's own attributions. "
                "Without a usable champion every order in flight is listed with p_late empty and "
                "unscored_reason saying why."
            ),
            kinds={"scikit-learn", "postgres"},
            metadata=_table_metadata(tables.order_delay_risk),
            **_common(),
        ),
        "delay_predictions": AssetOut(
            description=(
                "The prediction history: a row each time an order's prediction changes (another "
                "model, at_risk flipped, or p_late moved by 0.01 or more), kept "
                "BUFFALO_PREDICTION_RETENTION_DAYS. What was said about a parcel, and when."
            ),
            kinds={"postgres"},
            metadata=_table_metadata(tables.delay_predictions, preview=False, write_mode="append"),
            **_common(),
        ),
        "delay_model_drift": AssetOut(
            description=(
                "How far the orders in flight have moved from the champion's training rows, per "
                "feature (population stability index, or the percentile of a one-valued feature) "
                "and for the recent late share. A drift asks for a retraining."
            ),
            kinds={"postgres"},
            metadata=_table_metadata(tables.delay_model_drift, preview=False, write_mode="append"),
            **_common(),
        ),
    },
    ins={
        "clean_orders": _in("clean_orders", ORDER_COLUMNS),
        "order_events": _in("order_events", EVENT_COLUMNS),
    },
    deps=[delay_model],
    can_subset=False,
)
def score_orders_in_flight(
    context: AssetExecutionContext,
    clean_orders: DataFrame,
    order_events: DataFrame,
    postgres: PostgresResource,
) -> Iterator[Output]:
    """Scores the orders in flight with the champion, appends what changed to the prediction
    history, and compares the orders in flight with the champion's training rows.

    An order already past its promise has p_late 1 (reason: past the promised date). A
    champion this installation cannot use (another scikit-learn version) scores nothing: the
    orders are listed unscored with the reason, and delay_model trains a challenger."""
    from buffalo_assets.analytics.drift import drift, drift_frame, drift_summary
    from buffalo_assets.analytics.features import build_history, in_flight_features
    from buffalo_assets.analytics.model import risk_threshold, score_in_flight, unscored_in_flight
    from buffalo_assets.analytics.reasons import latest_texts

    as_of = _now()
    current = settings.load()
    engine = postgres.get_engine()
    with engine.connect() as connection:
        champion = model_store.champion(connection)
        newest = model_store.newest(connection)
    history = build_history(clean_orders, order_events, as_of, current.promise_business_days)
    features = in_flight_features(history)
    threshold = risk_threshold(current.false_alarm_cost)
    model, problem = _load_champion(champion)
    started = time.perf_counter()
    if model is None:
        reason = (
            f"champion {champion.model_version} {problem}"
            if champion is not None and problem is not None
            else "no champion delay model yet: "
            + (
                f"the newest training, {newest.model_version}, was {newest.status} ({newest.note})"
                if newest
                else "delay_model has not run"
            )
        )
        context.log.warning(reason)
        risk = unscored_in_flight(features, reason, as_of)
        metadata: dict[str, Any] = {"note": reason, "model_version": "none"}
    else:
        texts = latest_texts(order_events, features["order_id"], as_of)
        risk = score_in_flight(model, history, features, threshold, as_of, latest_texts=texts)
        metadata = {"model_version": model.version}
    scoring_s = time.perf_counter() - started
    risk = risk[list(DELAY_RISK_COLUMNS)]
    at_risk = risk["at_risk"].fillna(False).astype(bool)
    yield Output(
        risk,
        output_name="order_delay_risk",
        metadata={
            **metadata,
            "threshold": MetadataValue.float(round(threshold, 4)),
            "in_flight": MetadataValue.int(len(risk)),
            "scored": MetadataValue.int(int(risk["p_late"].notna().sum())),
            "at_risk": MetadataValue.int(int(at_risk.sum())),
            "with_reasons": MetadataValue.int(int(risk["reasons"].notna().sum())),
            "scoring_s": MetadataValue.float(round(scoring_s, 2)),
            "scored_at": as_of.isoformat(),
        },
    )

    changed = prediction_store.changed_predictions(engine, risk)
    deleted = prediction_store.append_predictions(engine, changed, current.prediction_retention_days, as_of)
    yield Output(
        None,
        output_name="delay_predictions",
        metadata={
            "stored": MetadataValue.int(len(changed)),
            "unchanged": MetadataValue.int(int(risk["p_late"].notna().sum()) - len(changed)),
            "deleted_past_retention": MetadataValue.int(deleted),
            "scored_at": as_of.isoformat(),
        },
    )

    profile = getattr(model, "profile", None)
    if model is None or profile is None:
        why = "no usable champion" if model is None else f"champion {model.version} has no training profile"
        yield Output(None, output_name="delay_model_drift", metadata={"compared": False, "note": why})
        return
    frame = model.text.transform(history, features)
    x = frame[list(model.feature_columns)].to_numpy(dtype="float64")
    rows = drift(profile, x, tuple(model.feature_columns), *recent_late_share(history), current.drift_psi)
    found = drift_frame(rows, pd.Timestamp(as_of), model.version, len(features))
    prediction_store.append_drift(engine, found, current.prediction_retention_days, as_of)
    drifted = drift_summary(found)
    requested = False
    if drifted:
        requested = prediction_store.request_retraining(
            engine, reason=f"drift: {drifted}", champion_version=model.version,
            run_id=context.run_id, now=as_of,
        )  # fmt: skip
        context.log.warning(f"orders in flight drifted from {model.version}'s training: {drifted}")
    psi_rows = found[found["measure"] == "psi"]
    yield Output(
        None,
        output_name="delay_model_drift",
        metadata={
            "compared": True,
            "model_version": model.version,
            "features": MetadataValue.int(len(found)),
            "drifted": MetadataValue.int(int(found["drifted"].sum())),
            "drifted_features": drifted or "none",
            "max_psi": _figure(psi_rows["value"].max() if len(psi_rows) else None),
            "retraining_requested": MetadataValue.bool(requested),
            "computed_at": as_of.isoformat(),
        },
    )


RECENT_DAYS = 14.0
MIN_RECENT_DELIVERIES = 20


def recent_late_share(history: Any) -> tuple[float | None, int]:
    """Late share of the orders delivered in the last 14 days before the history's moment, and
    how many they are (None below `MIN_RECENT_DELIVERIES`)."""
    from buffalo_assets.analytics._time import DAY_S

    delivered = history.delivered_s
    recent = ~np.isnan(delivered) & (delivered > history.as_of_s - RECENT_DAYS * DAY_S)
    count = int(recent.sum())
    if count < MIN_RECENT_DELIVERIES:
        return None, count
    return float((delivered[recent] > history.promise_s[recent]).mean()), count


@asset_check(
    asset=AssetKey("delay_model_drift"),
    name="in_flight_drift",
    blocking=False,
    description=(
        "Warns when a feature of the orders in flight (or the recent late share) has drifted beyond "
        "BUFFALO_DRIFT_PSI from the champion's training rows, naming the features; a retraining is "
        "then asked for. Not judged (a WARN, never a pass) when there is no champion to compare with."
    ),
)
def in_flight_drift(context: AssetCheckExecutionContext, postgres: PostgresResource) -> AssetCheckResult:
    from buffalo_assets.analytics.drift import drift_summary

    with postgres.get_engine().connect() as connection:
        found = prediction_store.current_drift(connection)
        request = prediction_store.open_request(connection)
    if not len(found):
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=(
                "not judged: the newest scoring compared nothing (no usable champion with a "
                "training profile, or no order in flight)"
            ),
            metadata={"judged": False},
        )
    drifted = drift_summary(found)
    metadata: dict[str, Any] = {
        "judged": True,
        "model_version": str(found["model_version"].iloc[0]),
        "computed_at": str(found["computed_at"].iloc[0]),
        "drifted": int(found["drifted"].sum()),
        "retraining_requested": request is not None,
    }
    if drifted:
        asked = f"; retraining asked for ({request['reason'][:200]})" if request else ""
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"drift from the champion's training rows: {drifted}{asked}",
            metadata=metadata,
        )
    return AssetCheckResult(
        passed=True, description="no feature drifted beyond BUFFALO_DRIFT_PSI", metadata=metadata
    )


@asset(
    name="delay_model_performance",
    deps=["delay_predictions", "order_status_now", "customer_alerts"],
    kinds={"postgres", "pandas"},
    metadata=_table_metadata(tables.delay_model_performance),
    **_common(),
)
def delay_model_performance(context: AssetExecutionContext, postgres: PostgresResource) -> Output:
    """Realized accuracy per week and model: of the orders predicted (or alerted at_risk) that
    week, how many have ended, how many were late, and the precision, recall and Brier score of
    the calls, judged on how the orders actually ended; for all orders, per province and per
    weight band. Only the weeks whose figures may still change are computed again (a week is
    final once every promise of its predictions has passed): their rows are replaced in one
    transaction, older weeks' rows are kept. A
    realized precision of the champion below BUFFALO_MIN_REALIZED_PRECISION asks for a
    retraining."""
    from buffalo_assets.analytics.performance import (
        ALERTS_SQL,
        CALLS_SQL,
        low_precision,
        query_parameters,
        realized,
    )

    as_of = _now()
    current = settings.load()
    engine = postgres.get_engine()
    params = query_parameters(as_of, current.promise_business_days)
    with engine.connect() as connection:
        calls = pd.read_sql_query(sa.text(CALLS_SQL), connection, params=params)
        alerts = pd.read_sql_query(sa.text(ALERTS_SQL), connection, params=params)
        champion = model_store.champion(connection)
    stamp = pd.Timestamp(as_of)
    performance = pd.concat(
        [realized(calls, "model", stamp), realized(alerts, "alerts", stamp)], ignore_index=True
    )
    reason = low_precision(
        performance, champion.model_version if champion else None, current.min_realized_precision
    )
    requested = False
    if reason is not None:
        requested = prediction_store.request_retraining(
            engine, reason=reason, champion_version=champion.model_version if champion else None,
            run_id=context.run_id, now=as_of,
        )  # fmt: skip
        context.log.warning(reason)
    prediction_store.replace_weeks(engine, performance, params["first_week"], params["last_week"])
    overall = performance[(performance["dimension"] == "all") & (performance["source"] == "model")]
    latest = overall.sort_values("week_start").iloc[-1] if len(overall) else None
    return Output(
        None,
        metadata={
            "weeks": MetadataValue.int(int(overall["week_start"].nunique())),
            "latest_week": str(latest["week_start"]) if latest is not None else "none",
            "latest_precision": _figure(latest["precision"] if latest is not None else None),
            "latest_recall": _figure(latest["recall"] if latest is not None else None),
            "latest_judged_orders": MetadataValue.int(int(latest["ended"]) if latest is not None else 0),
            "alerts_judged": MetadataValue.int(
                int(
                    performance.loc[
                        (performance["source"] == "alerts") & (performance["dimension"] == "all"), "ended"
                    ].sum()
                )
            ),
            "retraining_requested": MetadataValue.bool(requested),
            "low_precision": reason or "no",
            "computed_from": str(params["first_week"]),
            "as_of": as_of.isoformat(),
        },
    )


# -- the calendar ----------------------------------------------------------------------------


@asset(
    name="calendar",
    deps=[AssetKey("clean_orders")],
    kinds=KINDS,
    metadata=_table_metadata(tables.calendar),
    **_common(),
)
def calendar_asset(context: AssetExecutionContext, postgres: PostgresResource) -> Output:
    """Every day from the year of the first order to the end of next year: ISO week and its
    Monday, weekday, month, weekend, the South African public holiday's name and whether it is
    a business day (the days the promise counts). Power BI's date table
    (`analytics.bi_calendar`), related to the views' dates and periods."""
    from buffalo_assets.analytics.calendar import CALENDAR_COLUMNS, sa_calendar

    now = _now()
    with postgres.get_engine().connect() as connection:
        first = connection.execute(sa.text("SELECT min(created_at) FROM core.clean_orders")).scalar()
    first_year = min(first.year, now.year) if first is not None else now.year
    days = sa_calendar(first_year, now.year + 1)[list(CALENDAR_COLUMNS)]
    return Output(
        days,
        metadata={
            "days": MetadataValue.int(len(days)),
            "from": str(days["date"].iloc[0]),
            "until": str(days["date"].iloc[-1]),
            "holidays": MetadataValue.int(int(days["holiday_name"].notna().sum())),
        },
    )


# -- the report ------------------------------------------------------------------------------


@asset(
    name="delivery_report",
    ins={
        "order_status_now": _in("order_status_now", ["order_id", "created_at", "delivered_at", "is_late"]),
        "delivery_kpis": _in("delivery_kpis"),
        "order_delay_risk": _in("order_delay_risk", ["order_id", "p_late", "at_risk"]),
        "delay_model_performance": _in("delay_model_performance"),
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
    delay_model_performance: DataFrame,
    postgres: PostgresResource,
) -> Output:
    """A static HTML page people look at: door-to-door days of delivered orders, the late share
        by week, customs dwell by week, the risk of what is in flight, and the realized accuracy of
    the at-risk calls and alerts by week, with the gate's verdict
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
    page, figures = render_report(
        order_status_now, delivery_kpis, order_delay_risk, standing, generated, delay_model_performance
    )
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
    score_orders_in_flight,
    delay_model_performance,
    delivery_report,
    calendar_asset,
]
ANALYTICS_CHECKS = [delay_model_gate, in_flight_drift]
