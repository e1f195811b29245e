"""Declared tables of the platform. Nothing is ever created from a DataFrame's guessed types.

Schemas: `raw` (what Buffalo said, never edited), `core` (typed, cleaned), `analytics`
(what BI reads), `ops` (run bookkeeping and quarantine).

Nothing here creates anything: the migrations in `storage/migrations` do (`upgrade`), and
the `raw.orders` view is defined there. Change a table here and add a migration for it
(`buffalo db revision -m "..."`); tests/test_migrations.py fails until both agree.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from buffalo_assets.orders.vocabulary import STAGES

SCHEMAS = ("raw", "core", "analytics", "ops")

metadata = sa.MetaData()

order_ids = sa.Table(
    "order_ids",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True, comment="Buffalo order id, as text"),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    schema="raw",
    comment="Every order id the account's order list has shown.",
)

order_versions = sa.Table(
    "order_versions",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("payload", JSONB, nullable=False, comment="The order detail exactly as Buffalo sent it"),
    sa.Column("payload_sha256", sa.Text, primary_key=True),
    sa.Column("first_fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.Text, nullable=True, comment="Dagster run that first stored it"),
    schema="raw",
    comment="Append-only versions of each order's detail: a new row only when it changed.",
)
sa.Index("order_versions_latest", order_versions.c.order_id, order_versions.c.last_fetched_at.desc())

fetch_errors = sa.Table(
    "fetch_errors",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema="ops",
    comment="Order details that could not be fetched, with the reason.",
)

order_observations = sa.Table(
    "order_observations",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column(
        "fetched_at",
        sa.DateTime(timezone=True),
        primary_key=True,
        comment="When the fetch that saw this payload ran",
    ),
    sa.Column(
        "payload_sha256",
        sa.Text,
        nullable=False,
        comment="The version seen (raw.order_versions), different from the one seen before it",
    ),
    sa.Column("run_id", sa.Text, nullable=True, comment="Dagster run of the fetch"),
    schema="raw",
    comment=(
        "The sequence of payloads each order showed: a row whenever a fetch saw a payload other "
        "than the previous one (A, B, A again is three rows)."
    ),
)

gone_orders = sa.Table(
    "gone_orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column(
        "failures",
        sa.Integer,
        nullable=False,
        comment="Runs in a row whose fetch of the detail failed for good",
    ),
    sa.Column("kind", sa.Text, nullable=False, comment="Kind of the latest failure"),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("message", sa.Text, nullable=False, comment="What Buffalo said, latest failure"),
    sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "last_failed_at",
        sa.DateTime(timezone=True),
        nullable=False,
        comment="Latest failure; a quarantined order is re-checked a re-check period after it",
    ),
    sa.Column(
        "quarantined_at",
        sa.DateTime(timezone=True),
        nullable=True,
        comment="When the failures reached the limit; null: still fetched by every run",
    ),
    sa.Column("run_id", sa.Text, nullable=True, comment="Dagster run of the latest failure"),
    schema="ops",
    comment=(
        "Orders whose detail fails for good (gone): counted across runs; quarantined ones are "
        "only fetched by the periodic re-check. A successful fetch removes the row."
    ),
)

unstorable_payloads = sa.Table(
    "unstorable_payloads",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column(
        "payload_sha256",
        sa.Text,
        primary_key=True,
        comment="SHA-256 of the payload's JSON (out-of-range numbers as Infinity)",
    ),
    sa.Column("reason", sa.Text, nullable=False, comment="Why it cannot be stored canonically, and where"),
    sa.Column("body", sa.LargeBinary, nullable=False, comment="The HTTP response body exactly as received"),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.Text, nullable=True, comment="Dagster run that first saw it"),
    schema="ops",
    comment=(
        "Order details that cannot be stored as canonical JSON (numbers out of the float range, "
        "NUL characters), with their raw bytes; removed once a later payload of the order is stored."
    ),
)

list_walks = sa.Table(
    "list_walks",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("walked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("full_walk", sa.Boolean, nullable=False, comment="Walked to the end of the list"),
    sa.Column("pages", sa.Integer, nullable=False),
    sa.Column("ids_seen", sa.Integer, nullable=False),
    sa.Column("new_ids", sa.Integer, nullable=False),
    schema="ops",
    comment="Each walk of the order list: full, or stopped at the first page of known ids.",
)

# The stages are the vocabulary's; the constraint text is part of the schema (migration 0001).
STAGE_CHECK = "stage IN (" + ", ".join(f"'{stage}'" for stage in STAGES) + ")"


def _column(name: str, type_: Any, comment: str, **options: Any) -> sa.Column[Any]:
    return sa.Column(name, type_, comment=comment, **options)


clean_orders = sa.Table(
    "clean_orders",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("tracking_number", sa.Text, "Buffalo tracking number, e.g. BUFZA1234567890YQ (expressnumber)"),
    _column("third_party_number", sa.Text, "Last-mile courier reference (thirdnumber)"),
    _column("status_text", sa.Text, "Status in Buffalo's words (statusname)"),
    _column("stage", sa.Text, "Normalized journey stage (see README)", nullable=False),
    _column(
        "is_terminal", sa.Boolean, "Delivered, returned, cancelled or lost: will not change", nullable=False
    ),
    _column("pay_status", sa.Text, "Shipping fee payment status (paystatusname)"),
    _column("duty_status", sa.Text, "Import duty/VAT payment status (taxpaystatusname)"),
    _column("address", sa.Text, "Delivery address as given (personal data)"),
    _column("street", sa.Text, "Street part of the address"),
    _column("suburb", sa.Text, "Suburb part of the address"),
    _column("city", sa.Text, "City of delivery"),
    _column("province", sa.Text, "South African province of delivery"),
    _column("postal_code", sa.Text, "Four-digit postal code"),
    _column("weight_kg", sa.Numeric, "Weighed mass, kg (ascertainedweight)"),
    _column("volumetric_weight_kg", sa.Numeric, "Volumetric mass, kg (ascertainedvolumweight)"),
    _column("billed_weight_kg", sa.Numeric, "Billed weight, kg (finalweight)"),
    _column("cost_zar", sa.Numeric, "Charged shipping cost, ZAR (ascertainedcost)"),
    _column("duty_zar", sa.Numeric, "Duty/VAT collected, ZAR (receivedtax)"),
    _column("created_at", sa.DateTime(timezone=True), "Order created (createtimeStr, SAST)"),
    _column("updated_at", sa.DateTime(timezone=True), "Order last updated (updatetimeStr, SAST)"),
    _column("first_event_at", sa.DateTime(timezone=True), "Earliest tracking event"),
    _column(
        "delivered_at",
        sa.DateTime(timezone=True),
        "When delivered (delivered event); set iff stage is delivered",
    ),
    _column("days_in_transit", sa.Numeric, "Days from first event to delivery (or end, or transformed_at)"),
    _column("box_count", sa.Integer, "Boxes in the shipment", nullable=False),
    _column("item_count", sa.BigInteger, "Declared items over all boxes", nullable=False),
    _column("declared_value_zar", sa.Numeric, "Declared value of the goods (unit value x quantity), ZAR"),
    _column("event_count", sa.Integer, "Tracking events so far", nullable=False),
    _column("payload_sha256", sa.Text, "Raw version this row was built from", nullable=False),
    _column("transformed_at", sa.DateTime(timezone=True), "When this row was built", nullable=False),
    sa.CheckConstraint(STAGE_CHECK, name="clean_orders_stage"),
    schema="core",
    comment="One typed row per order, from its latest raw version.",
)

order_items = sa.Table(
    "order_items",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("box_index", sa.Integer, "Position of the box in boxList, from 1", primary_key=True),
    _column(
        "line_index", sa.Integer, "Position of the line in the box's detaillist, from 1", primary_key=True
    ),
    _column("description", sa.Text, "Goods description, when given (goodsname)"),
    _column("quantity", sa.BigInteger, "Declared quantity (number)"),
    _column("declared_value", sa.Numeric, "Declared unit value, ZAR (declaredvalue)"),
    _column("actual_declared_value", sa.Numeric, "Actual declared unit value, ZAR (actualdeclaredvalue)"),
    schema="core",
    comment="Declared goods per order, box and line.",
)

order_events = sa.Table(
    "order_events",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("event_id", sa.Text, "Buffalo event id (or derived from time and text)", primary_key=True),
    _column("event_at", sa.DateTime(timezone=True), "When it happened (createtime)"),
    _column("description", sa.Text, "Event text (content)"),
    _column("stage", sa.Text, "Journey stage the text belongs to", nullable=False),
    sa.CheckConstraint(STAGE_CHECK, name="order_events_stage"),
    schema="core",
    comment="Tracking events, deduplicated by event id, one row each.",
)

transform_errors = sa.Table(
    "transform_errors",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("payload_sha256", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema="ops",
    comment="Raw versions that could not be made sense of, with the reason.",
)

# -- analytics (issue 15) ---------------------------------------------------------------
# Base tables written by the analytics assets. BI reads the `analytics.bi_*` views over
# them (migration 0002), never these tables, so they can change without breaking reports.
_TS = sa.DateTime(timezone=True)
_FLOAT = sa.Float(precision=53)  # double precision
# Journey stages with a median-hours KPI column, customs first (as in analytics/kpis.py).
KPI_STAGES = ("customs", "processing", "dispatched", "in_transit", "arrived_hub", "out_for_delivery")

order_stage_durations = sa.Table(
    "order_stage_durations",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column(
        "stage_seq", sa.Integer, "Position of this visit in the order's journey, from 1", primary_key=True
    ),
    _column("stage", sa.Text, "Journey stage of the visit", nullable=False),
    _column("entered_at", _TS, "First event of the visit", nullable=False),
    _column(
        "left_at", _TS, "Start of the next visit; for the open visit, the transform time", nullable=False
    ),
    _column("hours", _FLOAT, "Hours spent in the stage (0 for a terminal stage)", nullable=False),
    _column("is_open", sa.Boolean, "The order is still in this stage", nullable=False),
    schema="analytics",
    comment="Every stage each order passed through, with entered/left times and hours spent.",
)

order_status_now = sa.Table(
    "order_status_now",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("stage", sa.Text, "Journey stage now", nullable=False),
    _column("status_text", sa.Text, "Status in Buffalo's words"),
    _column("created_at", _TS, "Order created"),
    _column("days_since_created", _FLOAT, "Days from creation to as_of"),
    _column("days_in_stage", _FLOAT, "Days in the current stage at as_of"),
    _column(
        "promised_delivery_at", _TS, "Promise: BUFFALO_PROMISE_BUSINESS_DAYS SA business days after creation"
    ),
    _column("delivered_at", _TS, "When delivered (null until then)"),
    _column(
        "late_by_days", _FLOAT, "Delivered minus promised, days (negative when early); overdue: days so far"
    ),
    _column(
        "is_late", sa.Boolean, "Delivered after the promise, or not delivered and past it; null if cancelled"
    ),
    _column("province", sa.Text, "South African province of delivery"),
    _column("weight_kg", _FLOAT, "Weighed mass, kg"),
    _column("declared_value_zar", _FLOAT, "Declared value of the goods, ZAR"),
    _column("duty_zar", _FLOAT, "Duty/VAT collected, ZAR"),
    _column("duty_status", sa.Text, "Duty/VAT payment status in Buffalo's words"),
    _column("duty_paid", sa.Boolean, "Duty paid (true), owed and unpaid (false), unknown (null)"),
    _column("as_of", _TS, "When this row was computed", nullable=False),
    schema="analytics",
    comment="One row per order: where it is now, its promise and whether it is late.",
)

delivery_kpis = sa.Table(
    "delivery_kpis",
    metadata,
    _column("grain", sa.Text, "day or week (ISO week, Monday, SAST)", primary_key=True),
    _column("period_start", sa.Date, "First day of the period (SAST)", primary_key=True),
    _column("orders_created", sa.Integer, "Orders created in the period", nullable=False),
    _column("orders_delivered", sa.Integer, "Orders delivered in the period", nullable=False),
    _column("orders_late", sa.Integer, "Of those, delivered after the promise", nullable=False),
    _column("on_time_share", _FLOAT, "Share of the period's deliveries on time (null without deliveries)"),
    _column("median_door_to_door_days", _FLOAT, "Median days from creation to delivery"),
    _column("p90_door_to_door_days", _FLOAT, "90th percentile of days from creation to delivery"),
    *(
        _column(f"median_hours_{stage}", _FLOAT, f"Median hours of {stage} visits that ended in the period")
        for stage in KPI_STAGES
    ),
    _column(
        "orders_stuck",
        sa.Integer,
        "Orders in flight at the period's end with no event for BUFFALO_STUCK_DAYS",
        nullable=False,
    ),
    _column("as_of", _TS, "When this row was computed", nullable=False),
    schema="analytics",
    comment="Daily and weekly delivery KPIs.",
)

delivery_late_shares = sa.Table(
    "delivery_late_shares",
    metadata,
    _column("grain", sa.Text, "day or week", primary_key=True),
    _column("period_start", sa.Date, "First day of the period (SAST)", primary_key=True),
    _column(
        "dimension",
        sa.Text,
        "province, weight_band, or cause (the stage that overran its typical time most)",
        primary_key=True,
    ),
    _column(
        "value", sa.Text, "The province, or the cause stage (unclear when none overran)", primary_key=True
    ),
    _column(
        "delivered",
        sa.Integer,
        "Orders delivered in the period (in the province; for causes: all)",
        nullable=False,
    ),
    _column("late", sa.Integer, "Of those, late (for causes: late with this cause)", nullable=False),
    _column("late_share", _FLOAT, "late / delivered"),
    schema="analytics",
    comment="Late share of delivered orders per period by province and by inferred delay cause.",
)

order_delay_risk = sa.Table(
    "order_delay_risk",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("promised_delivery_at", _TS, "The promise the risk is about"),
    _column("expected_delivery_at", _TS, "Model's median expected delivery (null when not scored)"),
    _column("p_late", _FLOAT, "Calibrated chance of arriving after the promise, 0..1 (null when not scored)"),
    _column(
        "at_risk",
        sa.Boolean,
        "p_late at or above the alert threshold (BUFFALO_FALSE_ALARM_COST); null when not scored",
    ),
    _column("scored_at", _TS, "When it was scored", nullable=False),
    _column("model_version", sa.Text, "The champion in ops.delay_models that scored it (null: none yet)"),
    _column("expected_low_at", _TS, "Early end of the expected range (10th percentile)"),
    _column("expected_high_at", _TS, "Late end of the expected range (90th percentile)"),
    _column("unscored_reason", sa.Text, "Why p_late is empty (no champion model yet), else null"),
    _column(
        "reasons",
        sa.Text,
        "Why an at-risk order is at risk: up to three reasons from the model's own attributions, "
        "most important first, separated by '; ' (null when not at risk)",
    ),
    schema="analytics",
    comment="Every in-flight order's chance of arriving late, from the champion delay model.",
)

MODEL_STATUSES = ("champion", "retired", "rejected", "not_judged", "untrained", "legacy")
MODEL_STATUS_CHECK = "status IN (" + ", ".join(f"'{status}'" for status in MODEL_STATUSES) + ")"

delay_models = sa.Table(
    "delay_models",
    metadata,
    _column("model_version", sa.Text, "UTC training time + hash of the fitted estimators", primary_key=True),
    _column("trained_at", _TS, "When it was trained", nullable=False),
    _column(
        "model", sa.LargeBinary, "The pickled DelayModel (estimators, calibration, text signals, baseline)"
    ),
    _column("threshold", _FLOAT, "at_risk threshold on p_late when it was judged (BUFFALO_FALSE_ALARM_COST)"),
    _column("training_rows", sa.Integer, "Labelled moments it was fitted on", nullable=False),
    _column(
        "metrics",
        JSONB,
        "Its evaluation: test figures of model, baseline and champion, the verdict",
        nullable=False,
    ),
    _column("note", sa.Text, "The gate's verdict and why, or why no model was trained"),
    _column("run_id", sa.Text, "Dagster run that trained it"),
    _column(
        "status",
        sa.Text,
        "champion (scores now), retired (was champion), rejected, not_judged, untrained (not enough "
        "history), legacy (trained by a release before the gate; never scores)",
        nullable=False,
    ),
    _column("as_of", _TS, "The moment it was trained as of (newest tracking event seen)"),
    _column("promoted_at", _TS, "When it became the champion"),
    _column("retired_at", _TS, "When a newer champion replaced it"),
    _column("feature_columns", ARRAY(sa.Text), "The features it reads, in order"),
    _column("features_hash", sa.Text, "sha256 of the feature list (first 16 hex digits)"),
    _column("sklearn_version", sa.Text, "scikit-learn that trained it: only the same version loads it"),
    _column("numpy_version", sa.Text, "numpy that trained it"),
    _column("training_from", _TS, "Creation of the oldest order of its history"),
    _column("training_until", _TS, "End of its training window (later orders calibrated and judged it)"),
    _column("promise_business_days", sa.Integer, "BUFFALO_PROMISE_BUSINESS_DAYS it was trained with"),
    _column("false_alarm_cost", _FLOAT, "BUFFALO_FALSE_ALARM_COST it was judged with"),
    _column(
        "trained_because",
        sa.Text,
        "first, schedule (BUFFALO_MODEL_RETRAIN_HOURS), asked (config retrain), requested: <why> "
        "(drift or low realized precision), or champion unreadable",
    ),
    sa.CheckConstraint(MODEL_STATUS_CHECK, name="delay_models_status"),
    schema="ops",
    comment="Every delay model trained, with its verdict; the champion scores analytics.order_delay_risk.",
)
# At most one champion, whatever runs race.
sa.Index(
    "delay_models_one_champion",
    delay_models.c.status,
    unique=True,
    postgresql_where=sa.text("status = 'champion'"),
)

calendar = sa.Table(
    "calendar",
    metadata,
    _column("date", sa.Date, "The day (South African dates)", primary_key=True),
    _column("iso_year", sa.Integer, "ISO 8601 year of its week", nullable=False),
    _column("iso_week", sa.Integer, "ISO 8601 week number (weeks start on Monday)", nullable=False),
    _column("week_start", sa.Date, "Monday of its ISO week: the KPIs' weekly period_start", nullable=False),
    _column("weekday", sa.Integer, "ISO weekday: Monday 1 .. Sunday 7", nullable=False),
    _column("month_start", sa.Date, "First day of its month", nullable=False),
    _column("is_weekend", sa.Boolean, "Saturday or Sunday", nullable=False),
    _column("holiday_name", sa.Text, "South African public holiday, else null"),
    _column(
        "is_business_day",
        sa.Boolean,
        "Neither weekend nor public holiday: the days BUFFALO_PROMISE_BUSINESS_DAYS counts",
        nullable=False,
    ),
    schema="analytics",
    comment="Every day from the first order's year to next year: a date table for BI.",
)

delay_predictions = sa.Table(
    "delay_predictions",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("scored_at", _TS, "When this prediction was made", primary_key=True),
    _column("model_version", sa.Text, "The champion that made it", nullable=False),
    _column("p_late", _FLOAT, "Calibrated chance of arriving after the promise", nullable=False),
    _column("at_risk", sa.Boolean, "p_late at or above the alert threshold", nullable=False),
    _column("promised_delivery_at", _TS, "The promise it is about"),
    _column("expected_delivery_at", _TS, "Median expected delivery"),
    _column("expected_low_at", _TS, "Early end of the expected range"),
    _column("expected_high_at", _TS, "Late end of the expected range"),
    _column("reasons", sa.Text, "The reasons given with it (at-risk orders)"),
    schema="analytics",
    comment=(
        "Prediction history: a row when an order's prediction changes (model, at_risk, or p_late by "
        "0.01 or more), kept BUFFALO_PREDICTION_RETENTION_DAYS."
    ),
)
sa.Index("delay_predictions_scored_at", delay_predictions.c.scored_at)

PERFORMANCE_SOURCES = ("model", "alerts")
delay_model_performance = sa.Table(
    "delay_model_performance",
    metadata,
    _column(
        "week_start", sa.Date, "Monday (SAST) of the ISO week the predictions were made in", primary_key=True
    ),
    _column("model_version", sa.Text, "The model that made them", primary_key=True),
    _column(
        "source",
        sa.Text,
        "model: every prediction made before the promise; alerts: the at_risk customer alerts sent",
        primary_key=True,
    ),
    _column("dimension", sa.Text, "all, province or weight_band", primary_key=True),
    _column(
        "value",
        sa.Text,
        "The slice: all, a province, or a weight band (<2 kg, 2-10 kg, 10-20 kg, >20 kg)",
        primary_key=True,
    ),
    _column("orders", sa.Integer, "Orders predicted (or alerted) that week", nullable=False),
    _column(
        "ended",
        sa.Integer,
        "Of them, how many have an outcome (delivered, or past the promise)",
        nullable=False,
    ),
    _column("late", sa.Integer, "Ended late", nullable=False),
    _column("flagged", sa.Integer, "Ended orders called at risk that week", nullable=False),
    _column("true_alarms", sa.Integer, "Called at risk and late", nullable=False),
    _column("false_alarms", sa.Integer, "Called at risk and on time", nullable=False),
    _column("precision", _FLOAT, "true_alarms / flagged (null without a flagged order)"),
    _column("recall", _FLOAT, "true_alarms / late (null without a late order; model only)"),
    _column("brier", _FLOAT, "Mean squared error of the week's last p_late of each order (model only)"),
    _column("computed_at", _TS, "When it was computed", nullable=False),
    sa.CheckConstraint(
        "source IN (" + ", ".join(f"'{s}'" for s in PERFORMANCE_SOURCES) + ")",
        name="delay_model_performance_source",
    ),
    schema="analytics",
    comment=(
        "Realized accuracy of the delay predictions and alerts, per week and model, "
        "judged on how orders ended."
    ),
)

delay_model_drift = sa.Table(
    "delay_model_drift",
    metadata,
    _column("computed_at", _TS, "When the orders in flight were compared", primary_key=True),
    _column(
        "model_version", sa.Text, "The champion whose training window they were compared with", nullable=False
    ),
    _column("feature", sa.Text, "Feature (or late_share_delivered_14d)", primary_key=True),
    _column(
        "measure",
        sa.Text,
        "psi (population stability index) or percentile (of a one-valued feature)",
        nullable=False,
    ),
    _column("value", _FLOAT, "The measure's value", nullable=False),
    _column(
        "drifted",
        sa.Boolean,
        "PSI above BUFFALO_DRIFT_PSI plus what sampling alone gives, or beyond the training range",
        nullable=False,
    ),
    _column("in_flight_orders", sa.Integer, "Orders in flight compared", nullable=False),
    schema="analytics",
    comment="How far the orders in flight have drifted from the champion's training rows, per feature.",
)

retrain_requests = sa.Table(
    "delay_retrain_requests",
    metadata,
    _column("requested_at", _TS, "When it was asked for", primary_key=True),
    _column("reason", sa.Text, "Why: the drifted features, or the realized precision", nullable=False),
    _column("champion_version", sa.Text, "The champion at the time"),
    _column("run_id", sa.Text, "Dagster run that asked"),
    _column("served_by", sa.Text, "The model version trained for it; null until then"),
    schema="ops",
    comment=(
        "Retrainings asked for by drift or low realized precision; delay_model serves the oldest open one."
    ),
)

delivery_reports = sa.Table(
    "delivery_reports",
    metadata,
    _column("report_id", sa.Text, "UTC render time + the run's id prefix", primary_key=True),
    _column("generated_at", _TS, "When it was rendered", nullable=False),
    _column("html", sa.Text, "The self-contained HTML page (plots embedded)", nullable=False),
    _column("run_id", sa.Text, "Dagster run that rendered it"),
    schema="ops",
    comment="Rendered delivery reports; `buffalo report` serves the latest.",
)

# -- customer alerts (issue 16) ---------------------------------------------------------
ALERT_REASONS = ("at_risk", "late", "duty_unpaid", "stuck", "delivered_after_delay")
ALERT_REASON_CHECK = "reason IN (" + ", ".join(f"'{reason}'" for reason in ALERT_REASONS) + ")"

customer_alerts = sa.Table(
    "customer_alerts",
    metadata,
    _column("order_id", sa.Text, "Buffalo order id", primary_key=True),
    _column("reason", sa.Text, "Why: " + ", ".join(ALERT_REASONS), primary_key=True),
    _column(
        "alert_id",
        sa.Text,
        "<order_id>:<reason>, stable: the webhook's Idempotency-Key",
        nullable=False,
        unique=True,
    ),
    _column("expressnumber", sa.Text, "Buffalo tracking number the customer knows"),
    _column("detail", JSONB, "The facts behind it: stage, days late, promised/expected date", nullable=False),
    _column("message", sa.Text, "Short customer-facing text (English)", nullable=False),
    _column("created_at", _TS, "When the alert was created", nullable=False),
    _column("run_id", sa.Text, "Dagster run that created it"),
    _column("sent_at", _TS, "When the webhook acknowledged it (2xx); null until then"),
    _column("attempts", sa.Integer, "POSTs tried so far", nullable=False, server_default="0"),
    _column("last_attempt_at", _TS, "When the latest POST was tried"),
    _column("last_error", sa.Text, "Why the latest POST failed (HTTP status or timeout)"),
    _column("next_attempt_at", _TS, "Not retried before this (backoff after a failure)"),
    _column("gave_up_at", _TS, "When the sender gave up (attempts exhausted, or a 4xx refusal)"),
    sa.CheckConstraint(ALERT_REASON_CHECK, name="customer_alerts_reason"),
    schema="analytics",
    comment=(
        "Outbox of customer alerts: one row per order and reason, never two; append-only "
        "(the sender only fills in delivery columns)."
    ),
)
sa.Index(
    "customer_alerts_unsent",
    customer_alerts.c.created_at,
    postgresql_where=sa.text("sent_at IS NULL AND gave_up_at IS NULL"),
)

# -- inbound stock and stock cover (issue 16) ----------------------------------------------

stock_levels = sa.Table(
    "stock_levels",
    metadata,
    _column(
        "goods",
        sa.Text,
        "Goods name normalized (case, spacing): matches inbound_stock.goods",
        primary_key=True,
    ),
    _column("goods_name", sa.Text, "Goods name as written in the imported file", nullable=False),
    _column("on_hand", _FLOAT, "Units on hand when counted", nullable=False),
    _column("daily_sales", _FLOAT, "Units sold per day", nullable=False),
    _column("as_of", sa.Date, "Day of the count (SAST; taken at the end of that day)", nullable=False),
    _column("source", sa.Text, "File name it was imported from", nullable=False),
    _column("line", sa.Integer, "Line of the file (the header is line 1)", nullable=False),
    _column("imported_at", _TS, "When `buffalo stock import` loaded it", nullable=False),
    sa.CheckConstraint("on_hand >= 0 AND daily_sales >= 0", name="stock_levels_not_negative"),
    schema="ops",
    comment="Solo's on-hand stock and daily sales from `buffalo stock import` (an import replaces all).",
)

inbound_stock = sa.Table(
    "inbound_stock",
    metadata,
    _column("goods", sa.Text, "Goods name normalized (Unicode NFKC, case, spacing)", primary_key=True),
    _column("goods_name", sa.Text, "Its most common spelling on the orders", nullable=False),
    _column(
        "state",
        sa.Text,
        "in_flight (not yet delivered), or arrived (delivered this ISO week)",
        primary_key=True,
    ),
    _column(
        "week_start",
        sa.Date,
        "Monday (SAST) of the ISO week it is expected in; arrived: the current week",
        primary_key=True,
    ),
    _column("orders", sa.Integer, "Orders carrying these goods", nullable=False),
    _column("quantity", _FLOAT, "Declared units", nullable=False),
    _column("declared_value_zar", _FLOAT, "Declared value of those units (unit value x quantity), ZAR"),
    _column("expected_low_at", _TS, "Earliest 10th-percentile delivery of the row's orders (in_flight)"),
    _column("expected_at", _TS, "Latest expected (median) delivery: all units expected by then (in_flight)"),
    _column("expected_high_at", _TS, "Latest 90th-percentile delivery of the row's orders (in_flight)"),
    _column(
        "unscored_orders",
        sa.Integer,
        "Orders the delay model did not score, dated by their promise instead",
        nullable=False,
    ),
    _column("as_of", _TS, "When this row was computed", nullable=False),
    sa.CheckConstraint("state IN ('in_flight', 'arrived')", name="inbound_stock_state"),
    schema="analytics",
    comment="Declared goods in flight by expected arrival week, and goods delivered this week.",
)

stock_cover = sa.Table(
    "stock_cover",
    metadata,
    _column("goods", sa.Text, "Goods name normalized, as in ops.stock_levels", primary_key=True),
    _column("goods_name", sa.Text, "Goods name as imported", nullable=False),
    _column("on_hand", _FLOAT, "Units on hand when counted", nullable=False),
    _column("daily_sales", _FLOAT, "Units sold per day", nullable=False),
    _column("stock_as_of", sa.Date, "Day of the count", nullable=False),
    _column("on_hand_now", _FLOAT, "on_hand less the sales since the end of the count's day", nullable=False),
    _column("inbound_quantity", _FLOAT, "Units of these goods in flight", nullable=False),
    _column("days_of_cover", _FLOAT, "Days until it runs out, counting arrivals (expected) before then"),
    _column("runs_out_at", _TS, "When it runs out (expected arrivals); null when nothing sells"),
    _column("days_of_cover_p90", _FLOAT, "The same with arrivals at their 90th percentile (pessimistic)"),
    _column("runs_out_at_p90", _TS, "When it runs out, pessimistic"),
    _column("next_arrival_at_p90", _TS, "Pessimistic arrival of the first goods that come after it ran out"),
    _column("gap_days_p90", _FLOAT, "Days with nothing on hand before that arrival"),
    _column(
        "stockout_risk",
        sa.Boolean,
        "Runs out (pessimistic) before goods in flight or a reorder now could arrive",
        nullable=False,
    ),
    _column("status", sa.Text, "stockout_gap, inbound_in_time, no_inbound or no_sales", nullable=False),
    _column("as_of", _TS, "When this row was computed", nullable=False),
    schema="analytics",
    comment="Days of stock cover per item counting goods in flight, and the stock-out risk.",
)
