"""Customer alerts: the `customer_alerts` outbox asset, job `send_customer_alerts` and its sensor.

The asset appends the alerts that are due (rules in `customer_alerts/rules.py`, wording in
`customer_alerts/wording.py`) to `analytics.customer_alerts`: one row per order and reason,
never two (`INSERT ... ON CONFLICT DO NOTHING` on the primary key). It is eager like the
other analytics assets, so every refresh of the delay risk and status adds what became due.

The sender (`customer_alerts/sender.py`) POSTs unsent alerts to BUFFALO_CUSTOMER_ALERT_WEBHOOK; its
sensor starts a run every minute while alerts are due and the webhook is set.
"""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dagster import (
    AssetExecutionContext,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    asset,
    job,
    op,
    sensor,
)
from dagster import Config as DagsterConfig
from pydantic import Field

from buffalo_assets import settings
from buffalo_assets.assets.analytics import KINDS, _common, _in, _now, _table_metadata
from buffalo_assets.customer_alerts.rules import DELAY_REASONS, REASONS, due_alerts
from buffalo_assets.customer_alerts.sender import (
    SenderPolicy,
    check_webhook,
    count_due,
    send_due_alerts,
    signing_key,
)
from buffalo_assets.storage import tables
from buffalo_assets.storage.io_manager import DataFrame
from buffalo_assets.storage.resource import PostgresResource

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

JOB_NAME = "send_customer_alerts"
# A sender run queued or running for less than this holds the sensor's next run back.
RUN_WAIT_MINUTES = 15
WEBHOOK_UNSET = (
    "BUFFALO_CUSTOMER_ALERT_WEBHOOK is not set: customer alerts stay in analytics.customer_alerts, unsent"
)
UNSIGNED = (
    "BUFFALO_CUSTOMER_ALERT_SECRET is not set: customer alerts are sent signed only (the receiver "
    "could not tell them from anyone else's); they stay in analytics.customer_alerts, unsent"
)
STATUS_COLUMNS = [
    "order_id",
    "stage",
    "promised_delivery_at",
    "delivered_at",
    "late_by_days",
    "is_late",
    "duty_paid",
    "duty_zar",
]


@asset(
    name="customer_alerts",
    ins={
        "order_status_now": _in("order_status_now", STATUS_COLUMNS),
        "order_delay_risk": _in(
            "order_delay_risk", ["order_id", "at_risk", "p_late", "expected_delivery_at"]
        ),
        "clean_orders": _in("clean_orders", ["order_id", "tracking_number"]),
    },
    # The last event per order is read as one aggregate (a row per order, not per event).
    deps=["order_events"],
    kinds=KINDS,
    metadata=_table_metadata(
        tables.customer_alerts,
        write_mode="upsert",
        primary_key=["order_id", "reason"],
        update_columns=[],
        write_counts_as={"inserted": "alerts_created", "updated": "alerts_updated"},
    ),
    **_common(),
)
def customer_alerts(
    context: AssetExecutionContext,
    order_status_now: DataFrame,
    order_delay_risk: DataFrame,
    clean_orders: DataFrame,
    postgres: PostgresResource,
) -> Output:
    """The outbox of customer alerts (append-only): one row per order and reason, never two.
    Reasons: `at_risk` (the delay model puts it above its threshold), `late` (promise passed,
    not delivered), `duty_unpaid` (in customs waiting for duty: the customer can act), `stuck`
    (no tracking event for BUFFALO_STUCK_DAYS), `delivered_after_delay`. Each row has a stable
    `alert_id` (`<order_id>:<reason>`, the webhook's Idempotency-Key), the facts in `detail`,
    a short English `message`, and the sender's delivery columns (`sent_at`, `attempts`,
    `last_error`, `next_attempt_at`, `gave_up_at`).

    Cool-down: an order gets no new delay alert (late, stuck, at_risk) within
    BUFFALO_CUSTOMER_ALERT_COOLDOWN_HOURS (default 72) of its previous one; a later run adds it if the
    condition still holds. duty_unpaid and delivered_after_delay are exempt."""
    as_of = _now()
    current = settings.load()
    with postgres.get_engine().connect() as connection:
        last_events = pd.read_sql_query(
            sa.text(
                "SELECT order_id, max(event_at) AS last_event_at FROM core.order_events GROUP BY order_id"
            ),
            connection,
        )
        previous = pd.read_sql_query(
            sa.text("SELECT order_id, reason, created_at FROM analytics.customer_alerts"), connection
        )
    due = due_alerts(
        order_status_now,
        order_delay_risk,
        clean_orders,
        last_events,
        previous,
        as_of,
        stuck_days=current.stuck_days,
        cooldown_hours=current.customer_alert_cooldown_hours,
    )
    new_by_reason = {reason: int((due.alerts["reason"] == reason).sum()) for reason in REASONS}
    context.log.info(
        f"{len(due.alerts)} new customer alerts ("
        + ", ".join(f"{reason} {count}" for reason, count in new_by_reason.items())
        + f"); {due.cooling_down} delay alerts held back by the cool-down"
    )
    return Output(
        due.alerts.assign(run_id=context.run_id),  # the run that created each row
        metadata={
            "new_by_reason": MetadataValue.json(new_by_reason),
            "conditions_holding": MetadataValue.json(due.conditions),
            "already_alerted": MetadataValue.int(due.already_alerted),
            "held_by_cooldown": MetadataValue.int(due.cooling_down),
            "cooldown_hours": MetadataValue.float(float(current.customer_alert_cooldown_hours)),
            "delay_reasons": ", ".join(DELAY_REASONS),
            "as_of": as_of.isoformat(),
        },
    )


class SendAlertsConfig(DagsterConfig):
    limit: int | None = Field(
        default=None, description="POST at most this many alerts in this run (default: every due one)"
    )


@op(
    name="send_due_customer_alerts",
    description="POSTs every due customer alert to BUFFALO_CUSTOMER_ALERT_WEBHOOK, signed with "
    "BUFFALO_CUSTOMER_ALERT_SECRET (Standard Webhooks), once per alert as far as the receiver is "
    "concerned (Idempotency-Key and webhook-id, row locks); metadata: counts sent, failed, given up.",
)
def send_customer_alerts_op(
    context: OpExecutionContext, config: SendAlertsConfig, postgres: PostgresResource
) -> Output[dict[str, Any]]:
    current = settings.load()
    if current.customer_alert_webhook is None:
        context.log.warning(WEBHOOK_UNSET)
        return Output({"sent": 0}, metadata={"note": WEBHOOK_UNSET, "sent": MetadataValue.int(0)})
    webhook = current.customer_alert_webhook.get_secret_value()
    if current.customer_alert_secret is None:
        raise Failure(description=UNSIGNED)
    secret = current.customer_alert_secret.get_secret_value()
    try:
        check_webhook(webhook)
        signing_key(secret)
    except ValueError as exc:
        raise Failure(description=str(exc)) from None
    policy = SenderPolicy(
        timeout_s=current.customer_alert_timeout_s,
        max_attempts=current.customer_alert_max_attempts,
        retry_s=current.customer_alert_retry_s,
    )
    totals = send_due_alerts(
        postgres.get_engine(),
        webhook,
        policy,
        secret,
        limit=config.limit,
        report=context.log.warning,
    )
    context.log.info(
        f"customer alerts: {totals.sent} sent, {totals.failed} failed, {totals.gave_up} given up"
    )
    counts = {"sent": totals.sent, "failed": totals.failed, "gave_up": totals.gave_up}
    return Output(
        counts,
        metadata={
            **{name: MetadataValue.int(value) for name, value in counts.items()},
            "sent_by_reason": MetadataValue.json(dict(totals.sent_by_reason)),
            "errors": MetadataValue.json(dict(totals.errors)),
            "max_attempts": MetadataValue.int(policy.max_attempts),
            **({"stopped": totals.stopped} if totals.stopped else {}),
        },
    )


@job(
    name=JOB_NAME,
    description=(
        "Deliver the customer alerts outbox to BUFFALO_CUSTOMER_ALERT_WEBHOOK (see docs/customer-alerts.md)."
    ),
)
def send_customer_alerts_job() -> None:
    send_customer_alerts_op()


@sensor(
    name="send_customer_alerts_sensor",
    # By name, not the job object: Definitions would copy a sensor holding the job to attach
    # resources, and that copy makes Dagster print a BetaWarning about `owners` to every user.
    job_name=JOB_NAME,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every minute: starts job send_customer_alerts when customer alerts are due and "
    "BUFFALO_CUSTOMER_ALERT_WEBHOOK and BUFFALO_CUSTOMER_ALERT_SECRET are set; skips, saying "
    "why, otherwise. Runs may overlap: each alert is claimed with a row lock, so no two runs "
    "send the same one.",
)
def send_customer_alerts_sensor(
    context: SensorEvaluationContext, postgres: PostgresResource
) -> RunRequest | SkipReason:
    current = settings.load()
    if current.customer_alert_webhook is None:
        return SkipReason(WEBHOOK_UNSET)
    if current.customer_alert_secret is None:
        return SkipReason(UNSIGNED)
    due = count_due(postgres.get_engine())
    if not due:
        return SkipReason("no customer alert is due")
    # Overlapping runs are safe (row locks), but a slow or silent service must not make the
    # sensor pile up a run a minute. A run older than RUN_WAIT_MINUTES (killed, stuck) no
    # longer holds the next one back.
    busy = context.instance.get_run_records(
        RunsFilter(
            job_name=JOB_NAME,
            statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
            created_after=datetime.now(UTC) - timedelta(minutes=RUN_WAIT_MINUTES),
        ),
        limit=1,
    )
    if busy:
        return SkipReason(
            f"{due} customer alerts are due; run {busy[0].dagster_run.run_id[:8]} of {JOB_NAME} "
            "is still sending"
        )
    return RunRequest(tags={"buffalo/alerts_due": str(due)})
