"""Run-failure alerts to the operations team: every failed run is posted to a webhook
(BUFFALO_OPS_ALERT_WEBHOOK), or logged.

The payload is plain JSON (`text` for Slack/Teams-style incoming webhooks, plus the run id,
job, failed steps with their errors, and a link when BUFFALO_DAGSTER_UI_URL is set). The
webhook URL often embeds a token, so it is never logged.
"""

from __future__ import annotations

from typing import Any

import requests
from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from buffalo_assets import settings


def failure_alert(context: RunFailureSensorContext) -> dict[str, Any]:
    run = context.dagster_run
    steps: list[dict[str, str]] = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None:
            steps.append({"step": event.step_key or "", "error": error.message.strip()})
    ui = (settings.load().dagster_ui_url or "").rstrip("/")
    link = f"{ui}/runs/{run.run_id}" if ui else None
    first = f" {steps[0]['step']}: {steps[0]['error'].splitlines()[0]}" if steps else ""
    text = f"Buffalo Orders Platform: run {run.run_id[:8]} of {run.job_name} failed.{first}"
    return {
        "text": text + (f" {link}" if link else ""),
        "run_id": run.run_id,
        "job": run.job_name,
        "failed_steps": steps,
        "message": context.failure_event.message,
        "url": link,
        "tags": {k: v for k, v in run.tags.items() if k.startswith(("airflow/", "dagster/schedule"))},
    }


@run_failure_sensor(
    name="alert_on_run_failure",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    monitor_all_code_locations=False,
    description="Posts every failed run to BUFFALO_OPS_ALERT_WEBHOOK, or logs it when unset.",
)
def alert_on_run_failure(context: RunFailureSensorContext) -> None:
    alert = failure_alert(context)
    configured = settings.load().ops_alert_webhook
    if configured is None or not configured.get_secret_value():
        context.log.error(alert["text"])
        return
    try:
        response = requests.post(configured.get_secret_value(), json=alert, timeout=10)
    except requests.RequestException as exc:
        # The library's message quotes the URL (and so any token in it): the class name only.
        raise RuntimeError(
            f"the alert webhook BUFFALO_OPS_ALERT_WEBHOOK could not be reached ({type(exc).__name__})"
        ) from None
    if response.status_code >= 300:
        # Raising makes the sensor tick fail visibly in the UI; the next tick tries again.
        raise RuntimeError(f"the alert webhook answered HTTP {response.status_code}")
    context.log.info(f"alert sent for run {alert['run_id']}")
