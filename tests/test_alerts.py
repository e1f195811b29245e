"""A failed run is posted to the alert webhook (a real local HTTP receiver), or logged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

from buffalo_assets.operations.failure_alerts import alert_on_run_failure
from tests.conftest import SandboxFactory
from tests.pipeline import run


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/buffalo", received
    server.shutdown()


def failed_run_context(start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance):  # noqa: ANN201
    running = start_sandbox(orders=10)
    result = run(running, pg_url, instance, password="not-the-password")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    return build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        dagster_event=failure,
    ).for_run_failure()


def test_a_failed_run_is_posted_to_the_webhook_with_its_failed_step(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    empty_store: sa.Engine,
    webhook: tuple[str, list[dict]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = webhook
    monkeypatch.setenv("BUFFALO_OPS_ALERT_WEBHOOK", url)
    monkeypatch.setenv("BUFFALO_DAGSTER_UI_URL", "http://127.0.0.1:3000")
    context = failed_run_context(start_sandbox, pg_url, instance)
    alert_on_run_failure(context)
    [alert] = received
    assert alert["run_id"] == context.dagster_run.run_id
    assert alert["failed_steps"][0]["step"] == "ingest"
    assert "Buffalo login failed" in alert["failed_steps"][0]["error"]
    assert alert["url"] == f"http://127.0.0.1:3000/runs/{alert['run_id']}"
    assert "ingest: " in alert["text"] and "not-the-password" not in json.dumps(alert)


def test_a_webhook_set_by_its_old_name_still_gets_every_failed_run(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    empty_store: sa.Engine,
    webhook: tuple[str, list[dict]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # BUFFALO_ALERT_WEBHOOK is now BUFFALO_OPS_ALERT_WEBHOOK; a deployment that still sets the
    # old name keeps hearing about its failed runs until the old name is removed.
    url, received = webhook
    monkeypatch.delenv("BUFFALO_OPS_ALERT_WEBHOOK", raising=False)
    monkeypatch.setenv("BUFFALO_ALERT_WEBHOOK", url)
    context = failed_run_context(start_sandbox, pg_url, instance)
    alert_on_run_failure(context)
    [alert] = received
    assert alert["run_id"] == context.dagster_run.run_id
    assert alert["failed_steps"][0]["step"] == "ingest"


def test_without_a_webhook_the_failure_is_logged(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    empty_store: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("BUFFALO_OPS_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("BUFFALO_ALERT_WEBHOOK", raising=False)  # nor by its old name
    context = failed_run_context(start_sandbox, pg_url, instance)
    capfd.readouterr()
    alert_on_run_failure(context)
    logged = capfd.readouterr().err  # Dagster's console logger writes to stderr
    assert f"Buffalo Orders Platform: run {context.dagster_run.run_id[:8]}" in logged
    assert "ingest: " in logged


def test_the_webhook_is_a_secret_masked_in_settings_and_never_quoted_when_unreachable(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    empty_store: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "T0K3N-in-the-hook-url"  # noqa: S105 - a made-up token, to prove it never shows
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        hook = f"http://127.0.0.1:{closed.getsockname()[1]}/services/{token}"
    shown = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "settings"],
        env={**os.environ, "BUFFALO_OPS_ALERT_WEBHOOK": hook}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = next(line for line in shown.stdout.splitlines() if line.startswith("BUFFALO_OPS_ALERT_WEBHOOK "))
    assert "********" in line and token not in shown.stdout + shown.stderr
    monkeypatch.setenv("BUFFALO_OPS_ALERT_WEBHOOK", hook)
    context = failed_run_context(start_sandbox, pg_url, instance)
    with pytest.raises(RuntimeError) as raised:
        alert_on_run_failure(context)
    assert "could not be reached (ConnectionError)" in str(raised.value)
    assert (
        token not in str(raised.value)
        and raised.value.__cause__ is None
        and raised.value.__suppress_context__
    )
