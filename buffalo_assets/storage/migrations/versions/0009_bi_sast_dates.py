"""South African date keys in the BI views (issue 26): each `analytics.bi_*` view gets, for
every timestamp column `<x>_at` (`<x>_at_p90`), a date column `<x>_date_sast`
(`<x>_p90_date_sast`): the day of that moment in South Africa (Africa/Johannesburg, SAST),
to relate to `bi_calendar.date` in Power BI, whose model has no time zones.

A timestamp at 22:00 UTC or later is on the next SAST day. `CREATE OR REPLACE VIEW` adds
the columns at the end and keeps the BI role's grants. Autogenerate does not see views, so
`buffalo db revision` wrote nothing: this file is written by hand. The downgrade makes the
views again without the columns; run `buffalo db grant-bi` after it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 22:21:55.000000
"""

from collections.abc import Sequence

from alembic import op

SAST = "Africa/Johannesburg"

# Each view as migration 0008 left it: its select list, and the rest from FROM on.
VIEWS: dict[str, tuple[str, str]] = {
    "bi_order_status": (
        """order_id, stage, status_text, created_at, days_since_created, days_in_stage,
               promised_delivery_at, delivered_at, late_by_days, is_late, province, weight_kg,
               declared_value_zar, duty_zar, duty_status, duty_paid, as_of""",
        "FROM analytics.order_status_now",
    ),
    "bi_stage_durations": (
        "order_id, stage_seq, stage, entered_at, left_at, hours, is_open",
        "FROM analytics.order_stage_durations",
    ),
    "bi_order_delay_risk": (
        """order_id, promised_delivery_at, expected_delivery_at, p_late, at_risk, scored_at,
               model_version, expected_low_at, expected_high_at, unscored_reason, reasons""",
        "FROM analytics.order_delay_risk",
    ),
    "bi_delay_models": (
        """model_version, trained_at, threshold, training_rows,
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
               as_of, promoted_at, retired_at,
               array_to_string(feature_columns, ', ') AS feature_columns, features_hash,
               sklearn_version, numpy_version, training_from, training_until,
               promise_business_days, false_alarm_cost, trained_because""",
        "FROM ops.delay_models",
    ),
    "bi_delay_predictions": (
        """order_id, scored_at, model_version, p_late, at_risk, promised_delivery_at,
               expected_delivery_at, expected_low_at, expected_high_at, reasons""",
        "FROM analytics.delay_predictions",
    ),
    "bi_delay_model_performance": (
        """week_start, model_version, source, dimension, value, orders, ended, late, flagged,
               true_alarms, false_alarms, precision, recall, brier, computed_at""",
        "FROM analytics.delay_model_performance",
    ),
    "bi_delay_model_drift": (
        "computed_at, model_version, feature, measure, value, drifted, in_flight_orders",
        "FROM analytics.delay_model_drift",
    ),
    "bi_delay_worklist": (
        """row_number() OVER (
                   ORDER BY r.p_late * coalesce(s.declared_value_zar, 0) DESC NULLS LAST, r.order_id
               ) AS rank,
               r.order_id, r.p_late, r.at_risk, s.declared_value_zar,
               (r.p_late * coalesce(s.declared_value_zar, 0))::double precision AS value_at_risk_zar,
               r.reasons, s.stage, s.province, r.promised_delivery_at, r.expected_delivery_at,
               r.expected_low_at, r.expected_high_at,
               a.order_id IS NOT NULL AS customer_alerted, a.alerted_at, r.model_version, r.scored_at""",
        """FROM analytics.order_delay_risk r
        LEFT JOIN analytics.order_status_now s USING (order_id)
        LEFT JOIN (
            SELECT order_id, max(sent_at) AS alerted_at
            FROM analytics.customer_alerts
            WHERE reason IN ('at_risk', 'late', 'stuck', 'duty_unpaid') AND sent_at IS NOT NULL
            GROUP BY order_id
        ) a USING (order_id)
        WHERE r.p_late IS NOT NULL""",
    ),
    "bi_customer_alerts": (
        """alert_id, order_id, reason, detail ->> 'stage' AS stage,
           (detail ->> 'days_late')::double precision AS days_late, created_at, sent_at,
           attempts, last_error, gave_up_at,
           CASE WHEN sent_at IS NOT NULL THEN 'sent' WHEN gave_up_at IS NOT NULL THEN 'given up'
                ELSE 'pending' END AS delivery""",
        "FROM analytics.customer_alerts",
    ),
    "bi_inbound_stock": (
        """goods, goods_name, state, week_start, orders, quantity, declared_value_zar,
               expected_low_at, expected_at, expected_high_at, unscored_orders, as_of""",
        "FROM analytics.inbound_stock",
    ),
    "bi_stock_cover": (
        """goods, goods_name, on_hand, daily_sales, stock_as_of, on_hand_now, inbound_quantity,
               days_of_cover, runs_out_at, days_of_cover_p90, runs_out_at_p90, next_arrival_at_p90,
               gap_days_p90, stockout_risk, status, as_of""",
        "FROM analytics.stock_cover",
    ),
}
# The new columns of each view, in order: date column -> the timestamp it is the SAST day of.
# Every `*_at` timestamp has one; `as_of`, `training_from` and `training_until` (when a row
# was computed, a model's window) have none. bi_delivery_kpis, bi_late_shares and
# bi_calendar have dates already and are unchanged.
DATE_KEYS: dict[str, dict[str, str]] = {
    "bi_order_status": {
        "created_date_sast": "created_at",
        "promised_delivery_date_sast": "promised_delivery_at",
        "delivered_date_sast": "delivered_at",
    },
    "bi_stage_durations": {"entered_date_sast": "entered_at", "left_date_sast": "left_at"},
    "bi_order_delay_risk": {
        "promised_delivery_date_sast": "promised_delivery_at",
        "expected_delivery_date_sast": "expected_delivery_at",
        "scored_date_sast": "scored_at",
        "expected_low_date_sast": "expected_low_at",
        "expected_high_date_sast": "expected_high_at",
    },
    "bi_delay_models": {
        "trained_date_sast": "trained_at",
        "promoted_date_sast": "promoted_at",
        "retired_date_sast": "retired_at",
    },
    "bi_delay_predictions": {
        "scored_date_sast": "scored_at",
        "promised_delivery_date_sast": "promised_delivery_at",
        "expected_delivery_date_sast": "expected_delivery_at",
        "expected_low_date_sast": "expected_low_at",
        "expected_high_date_sast": "expected_high_at",
    },
    "bi_delay_model_performance": {"computed_date_sast": "computed_at"},
    "bi_delay_model_drift": {"computed_date_sast": "computed_at"},
    "bi_delay_worklist": {
        "promised_delivery_date_sast": "r.promised_delivery_at",
        "expected_delivery_date_sast": "r.expected_delivery_at",
        "expected_low_date_sast": "r.expected_low_at",
        "expected_high_date_sast": "r.expected_high_at",
        "alerted_date_sast": "a.alerted_at",
        "scored_date_sast": "r.scored_at",
    },
    "bi_customer_alerts": {
        "created_date_sast": "created_at",
        "sent_date_sast": "sent_at",
        "gave_up_date_sast": "gave_up_at",
    },
    "bi_inbound_stock": {
        "expected_low_date_sast": "expected_low_at",
        "expected_date_sast": "expected_at",
        "expected_high_date_sast": "expected_high_at",
    },
    "bi_stock_cover": {
        "runs_out_date_sast": "runs_out_at",
        "runs_out_p90_date_sast": "runs_out_at_p90",
        "next_arrival_p90_date_sast": "next_arrival_at_p90",
    },
}

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def query(name: str, *, dates: bool) -> str:
    """The view's query: as at 0008, or with its SAST date keys at the end."""
    columns, rest = VIEWS[name]
    if dates:
        columns += "".join(
            f",\n               ({moment} AT TIME ZONE '{SAST}')::date AS {column}"
            for column, moment in DATE_KEYS[name].items()
        )
    return f"\n        SELECT {columns}\n        {rest}"


def upgrade() -> None:
    for name in VIEWS:
        op.execute(f"CREATE OR REPLACE VIEW analytics.{name} AS {query(name, dates=True)}")


def downgrade() -> None:
    # Views lose columns only by being made again; the BI role must be granted them again.
    for name in VIEWS:
        op.execute(f"DROP VIEW analytics.{name}")
        op.execute(f"CREATE VIEW analytics.{name} AS {query(name, dates=False)}")
