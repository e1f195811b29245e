"""`buffalo customer-alerts resend`: send again the customer alerts the sender gave up on."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from buffalo_assets import settings


@click.group("customer-alerts")
def customer_alerts() -> None:
    """Customer alerts (analytics.customer_alerts): what the sender gave up on."""


@customer_alerts.command("resend")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    default=None,
    help="Only alerts given up at or after this time, UTC (e.g. when the notification service went down)",
)
def resend(since: datetime | None) -> None:
    """Make the alerts the sender gave up on (and never sent) due again.

    Their attempts start again from 0; job send_customer_alerts, started by its sensor within a
    minute, POSTs them with their original Idempotency-Key, so the receiver still processes each
    once. Alerts already sent are never touched; safe while the sender runs.
    """
    from buffalo_assets.customer_alerts.sender import resend_given_up
    from buffalo_assets.storage.database import database_url
    from buffalo_assets.storage.resource import engine_for

    count = resend_given_up(engine_for(database_url()), since=since.replace(tzinfo=UTC) if since else None)
    scope = f" given up since {since:%Y-%m-%d %H:%M} UTC" if since else ""
    if count == 0:
        click.echo(f"no customer alert{scope} was waiting: nothing to re-send")
        return
    plural = "s" if count != 1 else ""
    click.echo(f"{count} customer alert{plural}{scope} due again; job send_customer_alerts sends them")
    if not settings.load().customer_alert_webhook:
        click.echo(
            "warning: BUFFALO_CUSTOMER_ALERT_WEBHOOK is unset: nothing is sent until it is set", err=True
        )
