"""`notify_ops_on_failure`: a task failure callback posting to the operations webhook.

Dagster's sensor `alert_on_run_failure` already posts every failed Dagster run (with its
Airflow tags) to BUFFALO_OPS_ALERT_WEBHOOK. This callback covers what only Airflow sees: a
task that failed without a failed Dagster run behind it (Dagster unreachable, a run lost
track of, a timeout, a task marked failed), so each failure reaches the team once. The
webhook URL often holds a token: it is never logged, and a connection error is reported by
its class only.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from dagster_provider.operators import DagsterRunFailed

log = logging.getLogger(__name__)
WEBHOOK = "BUFFALO_OPS_ALERT_WEBHOOK"


def failure_alert(context: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON posted for a failed task: `text` for Slack/Teams-style webhooks, and the fields."""
    ti = context["ti"]
    error = context.get("exception")
    reason = f"{type(error).__name__}: {error}" if error is not None else "no error recorded"
    first_line = reason.strip().splitlines()[0] if reason.strip() else reason
    log_url = getattr(ti, "log_url", None)
    text = (
        f"Buffalo Orders Platform: Airflow task {ti.dag_id}.{ti.task_id} (run {ti.run_id}, "
        f"try {ti.try_number}) failed. {first_line}"
    )
    return {
        "text": text + (f" {log_url}" if log_url else ""),
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": ti.try_number,
        "error": reason,
        "url": log_url,
    }


def notify_ops_on_failure(context: Mapping[str, Any]) -> None:
    """Post a failed task to BUFFALO_OPS_ALERT_WEBHOOK (or log it when unset).

    A failure that is a failed Dagster run is left to Dagster's own alert.
    """
    if isinstance(context.get("exception"), DagsterRunFailed):
        log.info("the Dagster run failed: Dagster's alert_on_run_failure reports it")
        return
    alert = failure_alert(context)
    webhook = os.environ.get(WEBHOOK, "").strip()
    if not webhook:
        log.error(alert["text"])
        return
    if not webhook.startswith(("https://", "http://")):
        log.error("the alert webhook %s is not an http(s) URL; the alert was not sent", WEBHOOK)
        return
    # The standard library, not httpx: httpx logs each request's URL (and so any token in it).
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        webhook,
        data=json.dumps(alert, default=str).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http(s) only
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError, ValueError) as error:
        # Their messages may quote the URL: the class name only.
        log.error("the alert webhook %s could not be reached (%s)", WEBHOOK, type(error).__name__)
        return
    if status >= 300:
        log.error("the alert webhook %s answered HTTP %s", WEBHOOK, status)
        return
    log.info("alert sent for task %s.%s", alert["dag_id"], alert["task_id"])
