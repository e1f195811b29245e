"""Predictions operations can act on and audit (issue 27).

The prediction history `analytics.delay_predictions` (a row when an order's prediction
changes), realized accuracy `analytics.delay_model_performance`, drift
`analytics.delay_model_drift`, retraining requests `ops.delay_retrain_requests`, the
reasons of each at-risk order (`analytics.order_delay_risk.reasons`) and the registry
columns of `ops.delay_models`. BI views: the new tables, `bi_delay_worklist`, and the two
model views with their new columns at the end (CREATE OR REPLACE keeps the BI role's grants;
run `buffalo db grant-bi` again for the new views).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 18:51:14.810200
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The views of migration 0006, each with its new columns at the end.
BI_ORDER_DELAY_RISK = """
    SELECT order_id, promised_delivery_at, expected_delivery_at, p_late, at_risk, scored_at,
           model_version, expected_low_at, expected_high_at, unscored_reason, reasons
    FROM analytics.order_delay_risk"""
_BI_DELAY_MODELS_COLUMNS = """
    SELECT model_version, trained_at, threshold, training_rows,
           (metrics -> 'model' ->> 'auc')::double precision AS model_auc,
           (metrics -> 'model' ->> 'f1')::double precision AS model_f1,
           (metrics -> 'model' ->> 'precision')::double precision AS model_precision,
           (metrics -> 'model' ->> 'recall')::double precision AS model_recall,
           (metrics -> 'model' ->> 'mae_days')::double precision AS model_mae_days,
           (metrics -> 'baseline' ->> 'auc')::double precision AS baseline_auc,
           (metrics -> 'baseline' ->> 'f1')::double precision AS baseline_f1,
           note,
           status,
           status IN ('champion', 'retired', 'rejected') AS judged,
           (metrics -> 'model' ->> 'ap')::double precision AS model_ap,
           (metrics -> 'model' ->> 'brier')::double precision AS model_brier,
           (metrics -> 'baseline' ->> 'ap')::double precision AS baseline_ap,
           (metrics -> 'baseline' ->> 'brier')::double precision AS baseline_brier,
           (metrics -> 'band' ->> 'coverage')::double precision AS band_coverage,
           (metrics -> 'test' ->> 'orders')::integer AS test_orders,
           as_of, promoted_at, retired_at"""
OLD_BI_DELAY_MODELS = _BI_DELAY_MODELS_COLUMNS + "\n    FROM ops.delay_models"
BI_DELAY_MODELS = (
    _BI_DELAY_MODELS_COLUMNS
    + """,
           array_to_string(feature_columns, ', ') AS feature_columns, features_hash,
           sklearn_version, numpy_version, training_from, training_until,
           promise_business_days, false_alarm_cost, trained_because
    FROM ops.delay_models"""
)
NEW_VIEWS: dict[str, str] = {
    "bi_delay_predictions": """
        SELECT order_id, scored_at, model_version, p_late, at_risk, promised_delivery_at,
               expected_delivery_at, expected_low_at, expected_high_at, reasons
        FROM analytics.delay_predictions""",
    "bi_delay_model_performance": """
        SELECT week_start, model_version, source, dimension, value, orders, ended, late, flagged,
               true_alarms, false_alarms, precision, recall, brier, computed_at
        FROM analytics.delay_model_performance""",
    "bi_delay_model_drift": """
        SELECT computed_at, model_version, feature, measure, value, drifted, in_flight_orders
        FROM analytics.delay_model_drift""",
    # In-flight parcels by expected loss (p_late x declared value), with the reasons, the
    # promised and expected dates, and whether a delay or duty alert reached the customer.
    "bi_delay_worklist": """
        SELECT row_number() OVER (
                   ORDER BY r.p_late * coalesce(s.declared_value_zar, 0) DESC NULLS LAST, r.order_id
               ) AS rank,
               r.order_id, r.p_late, r.at_risk, s.declared_value_zar,
               (r.p_late * coalesce(s.declared_value_zar, 0))::double precision AS value_at_risk_zar,
               r.reasons, s.stage, s.province, r.promised_delivery_at, r.expected_delivery_at,
               r.expected_low_at, r.expected_high_at,
               a.order_id IS NOT NULL AS customer_alerted, a.alerted_at, r.model_version, r.scored_at
        FROM analytics.order_delay_risk r
        LEFT JOIN analytics.order_status_now s USING (order_id)
        LEFT JOIN (
            SELECT order_id, max(sent_at) AS alerted_at
            FROM analytics.customer_alerts
            WHERE reason IN ('at_risk', 'late', 'stuck', 'duty_unpaid') AND sent_at IS NOT NULL
            GROUP BY order_id
        ) a USING (order_id)
        WHERE r.p_late IS NOT NULL""",
}
OLD_BI_ORDER_DELAY_RISK = """
    SELECT order_id, promised_delivery_at, expected_delivery_at, p_late, at_risk, scored_at,
           model_version, expected_low_at, expected_high_at, unscored_reason
    FROM analytics.order_delay_risk"""
LATE_SHARE_DIMENSION = "province, weight_band, or cause (the stage that overran its typical time most)"
OLD_LATE_SHARE_DIMENSION = "province, or cause (the stage that overran its typical time most)"

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "delay_model_drift",
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the orders in flight were compared",
        ),
        sa.Column(
            "model_version",
            sa.Text(),
            nullable=False,
            comment="The champion whose training window they were compared with",
        ),
        sa.Column("feature", sa.Text(), nullable=False, comment="Feature (or late_share_delivered_14d)"),
        sa.Column(
            "measure",
            sa.Text(),
            nullable=False,
            comment="psi (population stability index) or percentile (of a one-valued feature)",
        ),
        sa.Column("value", sa.Float(precision=53), nullable=False, comment="The measure's value"),
        sa.Column(
            "drifted",
            sa.Boolean(),
            nullable=False,
            comment=(
                "PSI above BUFFALO_DRIFT_PSI plus what sampling alone gives, or beyond the training range"
            ),
        ),
        sa.Column("in_flight_orders", sa.Integer(), nullable=False, comment="Orders in flight compared"),
        sa.PrimaryKeyConstraint("computed_at", "feature"),
        schema="analytics",
        comment="How far the orders in flight have drifted from the champion's training rows, per feature.",
    )
    op.create_table(
        "delay_model_performance",
        sa.Column(
            "week_start",
            sa.Date(),
            nullable=False,
            comment="Monday (SAST) of the ISO week the predictions were made in",
        ),
        sa.Column("model_version", sa.Text(), nullable=False, comment="The model that made them"),
        sa.Column(
            "source",
            sa.Text(),
            nullable=False,
            comment=(
                "model: every prediction made before the promise; alerts: the at_risk customer alerts sent"
            ),
        ),
        sa.Column("dimension", sa.Text(), nullable=False, comment="all, province or weight_band"),
        sa.Column(
            "value",
            sa.Text(),
            nullable=False,
            comment="The slice: all, a province, or a weight band (<2 kg, 2-10 kg, 10-20 kg, >20 kg)",
        ),
        sa.Column("orders", sa.Integer(), nullable=False, comment="Orders predicted (or alerted) that week"),
        sa.Column(
            "ended",
            sa.Integer(),
            nullable=False,
            comment="Of them, how many have an outcome (delivered, or past the promise)",
        ),
        sa.Column("late", sa.Integer(), nullable=False, comment="Ended late"),
        sa.Column("flagged", sa.Integer(), nullable=False, comment="Ended orders called at risk that week"),
        sa.Column("true_alarms", sa.Integer(), nullable=False, comment="Called at risk and late"),
        sa.Column("false_alarms", sa.Integer(), nullable=False, comment="Called at risk and on time"),
        sa.Column(
            "precision",
            sa.Float(precision=53),
            nullable=True,
            comment="true_alarms / flagged (null without a flagged order)",
        ),
        sa.Column(
            "recall",
            sa.Float(precision=53),
            nullable=True,
            comment="true_alarms / late (null without a late order; model only)",
        ),
        sa.Column(
            "brier",
            sa.Float(precision=53),
            nullable=True,
            comment="Mean squared error of the week's last p_late of each order (model only)",
        ),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, comment="When it was computed"),
        sa.CheckConstraint("source IN ('model', 'alerts')", name="delay_model_performance_source"),
        sa.PrimaryKeyConstraint("week_start", "model_version", "source", "dimension", "value"),
        schema="analytics",
        comment=(
            "Realized accuracy of the delay predictions and alerts, per week and model, "
            "judged on how orders ended."
        ),
    )
    op.create_table(
        "delay_predictions",
        sa.Column("order_id", sa.Text(), nullable=False, comment="Buffalo order id"),
        sa.Column(
            "scored_at", sa.DateTime(timezone=True), nullable=False, comment="When this prediction was made"
        ),
        sa.Column("model_version", sa.Text(), nullable=False, comment="The champion that made it"),
        sa.Column(
            "p_late",
            sa.Float(precision=53),
            nullable=False,
            comment="Calibrated chance of arriving after the promise",
        ),
        sa.Column("at_risk", sa.Boolean(), nullable=False, comment="p_late at or above the alert threshold"),
        sa.Column(
            "promised_delivery_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="The promise it is about",
        ),
        sa.Column(
            "expected_delivery_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Median expected delivery",
        ),
        sa.Column(
            "expected_low_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Early end of the expected range",
        ),
        sa.Column(
            "expected_high_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Late end of the expected range",
        ),
        sa.Column("reasons", sa.Text(), nullable=True, comment="The reasons given with it (at-risk orders)"),
        sa.PrimaryKeyConstraint("order_id", "scored_at"),
        schema="analytics",
        comment=(
            "Prediction history: a row when an order's prediction changes (model, at_risk, "
            "or p_late by 0.01 or more), kept BUFFALO_PREDICTION_RETENTION_DAYS."
        ),
    )
    op.create_index(
        "delay_predictions_scored_at", "delay_predictions", ["scored_at"], unique=False, schema="analytics"
    )
    op.create_table(
        "delay_retrain_requests",
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), nullable=False, comment="When it was asked for"
        ),
        sa.Column(
            "reason",
            sa.Text(),
            nullable=False,
            comment="Why: the drifted features, or the realized precision",
        ),
        sa.Column("champion_version", sa.Text(), nullable=True, comment="The champion at the time"),
        sa.Column("run_id", sa.Text(), nullable=True, comment="Dagster run that asked"),
        sa.Column(
            "served_by", sa.Text(), nullable=True, comment="The model version trained for it; null until then"
        ),
        sa.PrimaryKeyConstraint("requested_at"),
        schema="ops",
        comment=(
            "Retrainings asked for by drift or low realized precision; delay_model serves "
            "the oldest open one."
        ),
    )
    op.add_column(
        "order_delay_risk",
        sa.Column(
            "reasons",
            sa.Text(),
            nullable=True,
            comment=(
                "Why an at-risk order is at risk: up to three reasons from the model's own "
                "attributions, most important first, separated by '; ' (null when not at risk)"
            ),
        ),
        schema="analytics",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "feature_columns",
            postgresql.ARRAY(sa.Text()),
            nullable=True,
            comment="The features it reads, in order",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "features_hash",
            sa.Text(),
            nullable=True,
            comment="sha256 of the feature list (first 16 hex digits)",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "sklearn_version",
            sa.Text(),
            nullable=True,
            comment="scikit-learn that trained it: only the same version loads it",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column("numpy_version", sa.Text(), nullable=True, comment="numpy that trained it"),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "training_from",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Creation of the oldest order of its history",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "training_until",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="End of its training window (later orders calibrated and judged it)",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "promise_business_days",
            sa.Integer(),
            nullable=True,
            comment="BUFFALO_PROMISE_BUSINESS_DAYS it was trained with",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "false_alarm_cost",
            sa.Float(precision=53),
            nullable=True,
            comment="BUFFALO_FALSE_ALARM_COST it was judged with",
        ),
        schema="ops",
    )
    op.add_column(
        "delay_models",
        sa.Column(
            "trained_because",
            sa.Text(),
            nullable=True,
            comment=(
                "first, schedule (BUFFALO_MODEL_RETRAIN_HOURS), asked (config retrain), "
                "requested: <why> (drift or low realized precision), or champion unreadable"
            ),
        ),
        schema="ops",
    )
    # ### end Alembic commands ###
    op.alter_column(
        "delivery_late_shares", "dimension", existing_type=sa.Text(), existing_nullable=False,
        comment=LATE_SHARE_DIMENSION, existing_comment=OLD_LATE_SHARE_DIMENSION, schema="analytics",
    )  # fmt: skip
    op.execute(f"CREATE OR REPLACE VIEW analytics.bi_order_delay_risk AS {BI_ORDER_DELAY_RISK}")
    op.execute(f"CREATE OR REPLACE VIEW analytics.bi_delay_models AS {BI_DELAY_MODELS}")
    for name, query in NEW_VIEWS.items():
        op.execute(f"CREATE VIEW analytics.{name} AS {query}")


def downgrade() -> None:
    op.execute("DELETE FROM analytics.delivery_late_shares WHERE dimension = 'weight_band'")
    op.alter_column(
        "delivery_late_shares", "dimension", existing_type=sa.Text(), existing_nullable=False,
        comment=OLD_LATE_SHARE_DIMENSION, existing_comment=LATE_SHARE_DIMENSION, schema="analytics",
    )  # fmt: skip
    for name in NEW_VIEWS:
        op.execute(f"DROP VIEW analytics.{name}")
    # Views lose columns only by being made again; the BI role must be granted them again.
    op.execute("DROP VIEW analytics.bi_order_delay_risk")
    op.execute("DROP VIEW analytics.bi_delay_models")
    op.execute(f"CREATE VIEW analytics.bi_order_delay_risk AS {OLD_BI_ORDER_DELAY_RISK}")
    op.execute(f"CREATE VIEW analytics.bi_delay_models AS {OLD_BI_DELAY_MODELS}")
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_column("delay_models", "trained_because", schema="ops")
    op.drop_column("delay_models", "false_alarm_cost", schema="ops")
    op.drop_column("delay_models", "promise_business_days", schema="ops")
    op.drop_column("delay_models", "training_until", schema="ops")
    op.drop_column("delay_models", "training_from", schema="ops")
    op.drop_column("delay_models", "numpy_version", schema="ops")
    op.drop_column("delay_models", "sklearn_version", schema="ops")
    op.drop_column("delay_models", "features_hash", schema="ops")
    op.drop_column("delay_models", "feature_columns", schema="ops")
    op.drop_column("order_delay_risk", "reasons", schema="analytics")
    op.drop_table("delay_retrain_requests", schema="ops")
    op.drop_index("delay_predictions_scored_at", table_name="delay_predictions", schema="analytics")
    op.drop_table("delay_predictions", schema="analytics")
    op.drop_table("delay_model_performance", schema="analytics")
    op.drop_table("delay_model_drift", schema="analytics")
    # ### end Alembic commands ###
