"""Analytics: stage durations, where every order is now, delivery KPIs, the delay-risk model,
the risk of every order in flight, and a report people look at.

The computing is plain Python in `buffalo_assets/analytics/`; these assets read `core`
through the Postgres IO manager (only the columns they need), call it, and hand the result
back to the IO manager, which writes the declared tables. They are eager: whenever `core`
changes (the `core_automation` sensor, or job `refresh_all`), they follow.

Small worlds are normal here (a new deployment, the demo, tests): without enough delivered
history `delay_model` stores a row with a note instead of a model, its check passes saying
so, and `order_delay_risk` stays empty with the same note; no run fails for it.
scikit-learn and matplotlib are imported inside the analytics functions, never at import.
"""

import json
import math
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
from buffalo_assets.storage import tables
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
    "declared_value_zar",
    "duty_zar",
    "duty_status",
]
EVENT_COLUMNS = ["order_id", "event_at", "stage", "description"]
# Below these, a delay model is not trained (too few outcomes to learn from) and a trained
# model is not judged against the baseline (too few test moments for the comparison to mean
# anything). Both say so in the metadata instead of failing the run.
MIN_DELIVERED_ORDERS = 150
MIN_TEST_ROWS = 200
MIN_TEST_LATE = 20
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
    ins={"order_events": _in("order_events", ["order_id", "event_at", "stage"])},
    kinds=KINDS,
    metadata=_table_metadata(tables.order_stage_durations),
    **_common(),
)
def order_stage_durations_asset(context: AssetExecutionContext, order_events: DataFrame) -> Output:
    """Every stage each order passed through, in journey order: when it entered and left the
    stage and the hours it spent there. Consecutive tracking events of the same stage are one
    visit; the stage an order is in now is open (`is_open`) and ends at the time of the run;
    delivered, returned, cancelled and lost are visits of zero hours. Stage names are the
    vocabulary's (`orders/vocabulary.py`), the same as in `core`."""
    as_of = _now()
    durations = order_stage_durations(order_events, as_of)[list(STAGE_DURATION_COLUMNS)]
    return Output(
        durations,
        metadata={
            "orders": MetadataValue.int(int(durations["order_id"].nunique())),
            "open_visits": MetadataValue.int(int(durations["is_open"].sum())),
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
        description="Train a new model even if the newest one is younger than BUFFALO_MODEL_RETRAIN_HOURS",
    )


def _finite(value: Any) -> Any:
    """JSON for jsonb: NaN and infinities become null, numpy numbers plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _figures(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Model and baseline test metrics as flat metadata entries."""
    out: dict[str, Any] = {}
    for who in ("model", "baseline"):
        for name in ("auc", "precision", "recall", "f1", "mae_days"):
            value = evaluation.get(who, {}).get(name)
            out[f"{who}_{name}"] = (
                MetadataValue.float(round(float(value), 4))
                if value is not None and math.isfinite(float(value))
                else MetadataValue.text("n/a")
            )
    return out


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
    """The delay-risk model: gradient boosting (scikit-learn) trained on delivered history to
    give every order in flight its chance of arriving after the promise and an expected
    delivery date, from what is known at that moment (stage, time in stage, age, weekday,
    weight, declared value, duty status, province, and how fast customs is releasing parcels
    now), never the outcome.

    Evaluated on a time split (trained on orders promised before a cut, tested on the later
    ones) against a naive baseline (median remaining time per current stage); the at-risk
    threshold is chosen on validation orders between the two. Each training is a new version
    in `ops.delay_models` (model bytes, threshold, metrics), so no model lives on a local disk.
    With too little delivered history the row carries a note and no model.

    Retrained when the newest model is older than BUFFALO_MODEL_RETRAIN_HOURS (default 24)
    or on config `retrain: true`; in between, a run keeps that model (no new row), so an
    automation run after an ingest only rescores `order_delay_risk`."""
    from buffalo_assets.analytics.features import build_history
    from buffalo_assets.analytics.model import train_delay_model

    as_of = _now()
    current = settings.load()
    promise_days = current.promise_business_days
    with postgres.get_engine().connect() as connection:
        latest = latest_model_row(connection, trained=True)
    if latest is not None and not config.retrain:
        age_h = (as_of - latest.trained_at).total_seconds() / 3600
        if age_h < current.model_retrain_hours:
            context.log.info(f"keeping model {latest.model_version}, trained {age_h:.1f} hours ago")
            # None: the IO manager writes nothing; the stored row stays the model of record.
            return Output(
                None,
                metadata={
                    "model_version": latest.model_version,
                    "trained": MetadataValue.bool(True),
                    "retrained": MetadataValue.bool(False),
                    "model_age_hours": MetadataValue.float(round(age_h, 2)),
                    "threshold": MetadataValue.float(round(float(latest.threshold), 4)),
                    "training_rows": MetadataValue.int(int(latest.training_rows)),
                    **_figures(latest.metrics or {}),
                },
            )
    history = build_history(clean_orders, order_events, as_of, promise_days)
    delivered = int((~pd.isna(history.delivered_s)).sum())
    started = time.perf_counter()
    model = None
    note: str | None = None
    evaluation: dict[str, Any] = {}
    if delivered < MIN_DELIVERED_ORDERS:
        note = (
            f"not enough history: {delivered} delivered orders, at least {MIN_DELIVERED_ORDERS} "
            "are needed to train; order_delay_risk stays empty until then"
        )
    else:
        try:
            result = train_delay_model(history)
        # e.g. every order on time (both outcomes are needed), or no order promised in a split
        except (ValueError, IndexError) as exc:
            note = f"not enough history to train: {exc}"
        else:
            model, evaluation = result.model, _finite(result.evaluation)
    train_s = time.perf_counter() - started
    if note:
        context.log.warning(note)
    version = model.version if model is not None else f"untrained-{as_of.strftime('%Y%m%dT%H%M%SZ')}"
    row = pd.DataFrame(
        [
            {
                "model_version": version,
                "trained_at": as_of,
                # COPY's CSV reads bytea in PostgreSQL's hex format.
                "model": "\\x" + model.to_bytes().hex() if model is not None else None,
                "threshold": float(model.threshold) if model is not None else None,
                "training_rows": int(model.training_rows) if model is not None else 0,
                "metrics": json.dumps(evaluation),
                "note": note,
                "run_id": context.run_id,
            }
        ]
    )
    metadata: dict[str, Any] = {
        "model_version": version,
        "trained": MetadataValue.bool(model is not None),
        "retrained": MetadataValue.bool(model is not None),
        "delivered_orders": MetadataValue.int(delivered),
        "train_s": MetadataValue.float(round(train_s, 2)),
    }
    if model is not None:
        metadata |= {
            "threshold": MetadataValue.float(round(float(model.threshold), 4)),
            "baseline_threshold": MetadataValue.float(round(float(model.baseline.threshold), 4)),
            "training_rows": MetadataValue.int(int(model.training_rows)),
            "test_rows": MetadataValue.int(int(evaluation.get("test_rows", 0))),
            "test_cut": str(evaluation.get("cut", "")),
            **_figures(evaluation),
        }
    if note:
        metadata["note"] = note
    return Output(row, metadata=metadata)


def latest_model_row(
    connection: sa.Connection, *, trained: bool, run_id: str | None = None
) -> sa.Row[Any] | None:
    """The newest `ops.delay_models` row (with a model, when `trained`; of `run_id`, when given)."""
    conditions = [
        c for c in ("model IS NOT NULL" if trained else "", "run_id = :run_id" if run_id else "") if c
    ]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return connection.execute(
        sa.text(
            "SELECT model_version, trained_at, model, threshold, training_rows, metrics, note "
            f"FROM ops.delay_models {where} ORDER BY trained_at DESC, model_version DESC LIMIT 1"
        ),
        {"run_id": run_id} if run_id else {},
    ).first()


@asset_check(
    asset=delay_model,
    name="model_beats_the_naive_baseline",
    # Blocking: a model that loses to the naive baseline fails the run before its scores
    # replace the previous ones (order_delay_risk is not materialized).
    blocking=True,
    description=(
        "The model must beat the naive baseline (median remaining time per stage) on both F1 "
        "and AUC on the time-split test orders; a failure is an error that blocks the run "
        "(order_delay_risk is not rescored; the figures are in the check's metadata and "
        "ops.delay_models). "
        f"Passes, saying why, when there is no model yet or fewer than {MIN_TEST_ROWS} test "
        f"moments ({MIN_TEST_LATE} late) to judge on."
    ),
)
def model_beats_the_naive_baseline(
    context: AssetCheckExecutionContext, postgres: PostgresResource
) -> AssetCheckResult:
    with postgres.get_engine().connect() as connection:
        # The model this run trained; the newest one when the check runs by itself.
        row = latest_model_row(connection, trained=False, run_id=context.run.run_id) or latest_model_row(
            connection, trained=False
        )
    if row is None:
        return AssetCheckResult(
            passed=False, description="no row in ops.delay_models: delay_model wrote nothing"
        )
    metrics = row.metrics or {}
    if row.model is None:
        return AssetCheckResult(
            passed=True, description=f"not judged: {row.note}", metadata={"judged": False}
        )
    model, baseline = metrics.get("model", {}), metrics.get("baseline", {})
    test_rows = int(metrics.get("test_rows", 0))
    late_share = model.get("late_share")
    late = round(test_rows * float(late_share)) if late_share is not None else 0
    figures = {
        "model_version": row.model_version,
        "test_rows": test_rows,
        **{
            f"{who}_{k}": metrics[who][k]
            for who in ("model", "baseline")
            for k in ("auc", "f1")
            if metrics.get(who, {}).get(k) is not None
        },
    }
    if test_rows < MIN_TEST_ROWS or late < MIN_TEST_LATE:
        return AssetCheckResult(
            passed=True,
            description=(
                f"not judged: {test_rows} test moments ({late} late); at least {MIN_TEST_ROWS} "
                f"({MIN_TEST_LATE} late) are needed"
            ),
            metadata={"judged": False, **figures},
        )
    better_f1 = _above(model.get("f1"), baseline.get("f1"))
    better_auc = _above(model.get("auc"), baseline.get("auc"))
    verdict = (
        f"F1 {_fmt(model.get('f1'))} vs baseline {_fmt(baseline.get('f1'))}, "
        f"AUC {_fmt(model.get('auc'))} vs baseline {_fmt(baseline.get('auc'))}"
    )
    return AssetCheckResult(
        passed=better_f1 and better_auc,
        severity=AssetCheckSeverity.ERROR,
        description=("model beats the baseline: " if better_f1 and better_auc else "model is NOT better: ")
        + verdict,
        metadata={"judged": True, **figures},
    )


def _above(ours: Any, theirs: Any) -> bool:
    if ours is None:
        return False
    return theirs is None or float(ours) > float(theirs)


def _fmt(value: Any) -> str:
    return f"{float(value):.3f}" if value is not None else "n/a"


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
    """Every order in flight, scored by the latest delay model: `p_late` (0..1, the chance of
    arriving after the promise), `at_risk` (p_late above the threshold chosen on validation
    data), the promised and expected delivery dates (with a 10th-90th percentile range), when
    it was scored and by which `model_version`. An order already past its promise has p_late 1.
    Empty, with a note, until a model could be trained."""
    from buffalo_assets.analytics.features import build_history, in_flight_features
    from buffalo_assets.analytics.model import DelayModel, score_in_flight

    as_of = _now()
    with postgres.get_engine().connect() as connection:
        row = latest_model_row(connection, trained=True)
    empty = pd.DataFrame(columns=list(DELAY_RISK_COLUMNS))
    if row is None:
        note = "no delay model yet (not enough delivered history): nothing scored"
        context.log.warning(note)
        return Output(empty, metadata={"note": note, "in_flight": MetadataValue.int(0)})
    model = DelayModel.from_bytes(bytes(row.model))
    history = build_history(clean_orders, order_events, as_of, settings.load().promise_business_days)
    features = in_flight_features(history)
    risk = score_in_flight(model, features, as_of)[list(DELAY_RISK_COLUMNS)] if len(features) else empty
    return Output(
        risk,
        metadata={
            "model_version": model.version,
            "threshold": MetadataValue.float(round(float(model.threshold), 4)),
            "in_flight": MetadataValue.int(len(risk)),
            "at_risk": MetadataValue.int(int(risk["at_risk"].sum()) if len(risk) else 0),
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
    by week, customs dwell by week, and the risk of what is in flight, with the delay model's
    test figures next to the baseline's. Stored in `ops.delivery_reports`; `buffalo report`
    writes the latest to a file (or serves it on 127.0.0.1)."""
    from buffalo_assets.analytics.report import render_report

    generated = _now()
    with postgres.get_engine().connect() as connection:
        row = latest_model_row(connection, trained=True)
    evaluation = row.metrics if row is not None else None
    page, figures = render_report(order_status_now, delivery_kpis, order_delay_risk, evaluation, generated)
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
ANALYTICS_CHECKS = [model_beats_the_naive_baseline]
