"""Customer alerts: the outbox on a sandbox world, and its delivery exactly once under faults.

The outbox is filled by a real materialization (sandbox over HTTP, PostgreSQL, a Dagster
instance). The sender POSTs to a local receiver that, like a real notification service,
processes each Idempotency-Key once; it fails some first attempts with 500 and answers
some slowly (past the sender's timeout, after processing them). Two sender runs go in
parallel as real `dagster job execute` processes and one is killed with SIGKILL while its
POST is in flight.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    RunsFilter,
    SkipReason,
    build_sensor_context,
    evaluate_automation_conditions,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from buffalo_assets.assets.analytics import ANALYTICS_ASSETS
from buffalo_assets.assets.customer_alerts import (
    JOB_NAME,
    UNSIGNED,
    WEBHOOK_UNSET,
    customer_alerts,
    send_customer_alerts_job,
    send_customer_alerts_sensor,
)
from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.customer_alerts.rules import due_alerts
from buffalo_assets.customer_alerts.sender import (
    SenderPolicy,
    SendTotals,
    resend_given_up,
    send_due_alerts,
    signature_headers,
    signing_key,
)
from buffalo_assets.operations.runs import release_dead_runs
from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.server import running_sandbox
from buffalo_assets.storage.resource import PostgresResource
from tests.conftest import SandboxFactory
from tests.pipeline import ANALYTICS, EVERYTHING, INGESTION, ROOT, metadata_of, resources, run

DAY = 86_400.0
# The outbox is checked for whatever risk scores the run produced.
ALL = [*ANALYTICS, customer_alerts]
TOKEN = "s3cret-hook-token"  # noqa: S105 - a made-up token the URL carries, to prove it is never logged
# The signing secret shared with the receiver (Standard Webhooks: whsec_ + base64 of 32 bytes).
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OUTBOX = "analytics.customer_alerts"


@dataclass
class Outbox:
    pg_url: str
    engine: sa.Engine
    first_run: dict[str, Any]
    addresses: list[str]


@pytest.fixture(scope="module")
def outbox(pg_url: str, engine: sa.Engine, instance: DagsterInstance) -> Iterator[Outbox]:
    """A sandbox world with history, ingested and analysed once; the outbox filled by that run."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "TRUNCATE raw.order_ids, raw.order_versions, ops.fetch_errors, ops.list_walks, "
                "core.clean_orders, core.order_items, core.order_events, ops.transform_errors, "
                "raw.order_observations, ops.gone_orders, ops.unstorable_payloads, "
                "analytics.order_stage_durations, analytics.order_status_now, analytics.delivery_kpis, "
                "analytics.delivery_late_shares, analytics.order_delay_risk, ops.delay_models, "
                f"ops.delivery_reports, {OUTBOX}, analytics.delay_predictions, "
                "analytics.delay_model_performance, analytics.delay_model_drift, ops.delay_retrain_requests"
            )
        )
    config = SandboxConfig(orders=1_500, history_days=90, start=time.time() - 60)
    with running_sandbox(config) as running:
        result = run(running, pg_url, instance, ALL)
        assert result.success
        first = metadata_of(result, "customer_alerts")
        # The same world again, unchanged: nothing new is due.
        again = run(running, pg_url, instance, ALL, selection=AssetSelection.assets("customer_alerts"))
        assert again.success
        first["second_run"] = metadata_of(again, "customer_alerts")
    with engine.connect() as connection:
        addresses = connection.execute(
            sa.text("SELECT address FROM core.clean_orders WHERE address IS NOT NULL")
        ).scalars().all()  # fmt: skip
    yield Outbox(pg_url, engine, first, list(addresses))


def _outbox(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(sa.text(f"SELECT * FROM {OUTBOX} ORDER BY alert_id"), connection)


def _reset_delivery(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"UPDATE {OUTBOX} SET sent_at = NULL, attempts = 0, last_attempt_at = NULL, "
                "last_error = NULL, next_attempt_at = NULL, gave_up_at = NULL"
            )
        )


# -- the outbox ---------------------------------------------------------------------------


def test_the_outbox_holds_every_reason_once_per_order_and_a_rerun_adds_nothing(outbox: Outbox) -> None:
    alerts = _outbox(outbox.engine)
    created = outbox.first_run["alerts_created"]
    assert created == len(alerts) > 0
    assert set(alerts["reason"]) == {"at_risk", "late", "duty_unpaid", "stuck", "delivered_after_delay"}
    assert (alerts["alert_id"] == alerts["order_id"] + ":" + alerts["reason"]).all()
    assert alerts["run_id"].notna().all()  # the run that created each row
    assert not alerts.duplicated(["order_id", "reason"]).any()
    assert alerts["sent_at"].isna().all() and (alerts["attempts"] == 0).all()
    # Re-materializing the same world adds no row.
    assert outbox.first_run["second_run"]["alerts_created"] == 0
    # Messages name the parcel by its tracking number, never an address.
    with_number = alerts[alerts["expressnumber"].notna()]
    assert all(n in m for n, m in zip(with_number["expressnumber"], with_number["message"], strict=True))
    assert not any(a in m for a in outbox.addresses for m in alerts["message"])
    late = alerts[alerts["reason"] == "late"].iloc[0]
    assert late["detail"]["days_late"] > 0 and late["detail"]["promised_date"]
    duty = alerts[alerts["reason"] == "duty_unpaid"].iloc[0]
    assert duty["detail"]["stage"] == "customs" and "duty" in duty["message"]
    # One delay alert per order within the cool-down (72 h by default): orders where several
    # delay conditions hold got only one, and the others were held back.
    delay = alerts[alerts["reason"].isin(["late", "stuck", "at_risk"])]
    assert not delay.duplicated("order_id").any()
    assert outbox.first_run["second_run"]["held_by_cooldown"] > 0


def test_a_delay_condition_held_back_by_the_cooldown_is_alerted_once_the_cooldown_is_over(
    outbox: Outbox, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _outbox(outbox.engine)
    held = outbox.first_run["second_run"]["held_by_cooldown"]
    # A cool-down of zero hours is over at once: the next run adds a held-back condition.
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_COOLDOWN_HOURS", "0")
    config = SandboxConfig(orders=1_500, history_days=90, start=time.time() - 60)
    with running_sandbox(config) as running:
        result = run(
            running, outbox.pg_url, instance, ALL, selection=AssetSelection.assets("customer_alerts")
        )
    assert result.success
    added = metadata_of(result, "customer_alerts")["alerts_created"]
    after = _outbox(outbox.engine)
    assert 0 < added <= held and len(after) == len(before) + added
    new = after[~after["alert_id"].isin(before["alert_id"])]
    assert set(new["reason"]) <= {"late", "stuck", "at_risk"}
    # Each went to an order that already had a delay alert: the cool-down held it, not the rules.
    earlier_delay = before[before["reason"].isin(["late", "stuck", "at_risk"])]
    assert set(new["order_id"]) <= set(earlier_delay["order_id"])


def test_the_cooldown_spans_the_delay_reasons_of_an_order_and_spares_duty_and_delivery() -> None:
    t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)

    def status(stage: str, is_late: bool, duty_paid: bool | None = None) -> pd.DataFrame:
        return pd.DataFrame(
            [{"order_id": "7", "stage": stage, "promised_delivery_at": t0 + timedelta(days=1),
              "delivered_at": None, "late_by_days": None, "is_late": is_late, "duty_paid": duty_paid,
              "duty_zar": 120.0}]
        )  # fmt: skip

    risk = pd.DataFrame([{"order_id": "7", "at_risk": True, "p_late": 0.9, "expected_delivery_at": t0}])
    tracking = pd.DataFrame([{"order_id": "7", "tracking_number": "BUFZA7"}])
    events = pd.DataFrame([{"order_id": "7", "last_event_at": t0}])
    previous = pd.DataFrame(columns=["order_id", "reason", "created_at"])
    rules = {"stuck_days": 5.0, "cooldown_hours": 72.0}

    first = due_alerts(status("in_transit", False), risk, tracking, events, previous, t0, **rules)
    assert list(first.alerts["reason"]) == ["at_risk"]
    previous = first.alerts[["order_id", "reason", "created_at"]]
    # A day later it is late and in customs waiting for duty: the duty alert is not held back,
    # the late one is (within 72 hours of the at_risk alert).
    later = t0 + timedelta(days=1, hours=1)
    second = due_alerts(status("customs", True, False), risk, tracking, events, previous, later, **rules)
    assert list(second.alerts["reason"]) == ["duty_unpaid"] and second.cooling_down == 1
    previous = pd.concat([previous, second.alerts[["order_id", "reason", "created_at"]]])
    # After the cool-down the late alert comes, still once.
    after = t0 + timedelta(hours=73)
    third = due_alerts(status("customs", True, False), risk, tracking, events, previous, after, **rules)
    assert list(third.alerts["reason"]) == ["late"]
    assert "BUFZA7" in third.alerts["message"].iloc[0]


# -- the sender -----------------------------------------------------------------------------


def _fault(key: str) -> str:
    """Deterministic per key: about a quarter fail their first POST, a tenth answer it slowly."""
    bucket = zlib.crc32(key.encode()) % 20
    return "fail" if bucket < 5 else "slow" if bucket < 7 else "ok"


@dataclass
class Receiver:
    """A notification service: records every POST, processes each Idempotency-Key once."""

    slow_s: float
    refuse: set[str] = field(default_factory=set)  # answered 422 (a 4xx: give up)
    broken: set[str] = field(default_factory=set)  # answered 503 every time
    posts: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Kill support: POSTs are attributed to the sender processes in `pids`; once every one of
    # them has posted, the next POST of the victim is held (after processing it) until released.
    pids: list[int] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    held_key: str | None = None
    hold_keys: set[str] = field(default_factory=set)  # the first POST of one of these is held too
    url: str = ""
    unsigned: int = 0  # POSTs whose signature the receiver could not verify (answered 401)

    def owner(self, port: int) -> int | None:
        for pid in self.pids:
            try:
                processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
                for process in processes:
                    if any(c.laddr and c.laddr.port == port for c in process.net_connections("tcp")):
                        return process.pid if process.pid == pid else pid
            except psutil.Error:
                continue
        return None

    def handle(self, key: str, body: dict[str, Any], port: int) -> int:
        pid = self.owner(port) if self.pids else None
        with self.lock:
            attempt = sum(1 for p in self.posts if p["key"] == key) + 1
            self.posts.append({"key": key, "at": time.time(), "pid": pid, "body": body})
            by_pid = Counter(p["pid"] for p in self.posts)
            if key in self.broken:
                return 503
            if key in self.refuse:
                return 422
            if attempt == 1 and _fault(key) == "fail":
                return 500
            if key not in self.notifications:
                self.notifications.append(key)
            hold = self.held_key is None and (
                key in self.hold_keys
                or (bool(self.pids) and pid == self.pids[0] and all(by_pid[p] >= 3 for p in self.pids))
            )
            if hold:
                self.held_key = key
        if hold:
            self.held.set()
            self.release.wait(60)
        elif attempt == 1 and _fault(key) == "slow":
            time.sleep(self.slow_s)
        return 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(slow_s=2.5)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            body = json.loads(raw)
            assert self.headers["Content-Type"] == "application/json"
            try:  # as the notification service would: with the Standard Webhooks library
                Webhook(SECRET).verify(raw, dict(self.headers.items()))
                signed = self.headers["webhook-id"] == self.headers["Idempotency-Key"] == body["alert_id"]
            except WebhookVerificationError:
                signed = False
            if not signed:
                with state.lock:
                    state.unsigned += 1
                status = 401
            elif "/wrong" in self.path:  # a webhook set to a path the service does not have
                status = 404
            else:
                status = state.handle(self.headers["Idempotency-Key"], body, self.client_address[1])
            # Error pages that echo the request (its path holds the token), as many servers' do.
            answer = (
                b'{"ok": true}'
                if status == 200
                else json.dumps({"error": "try later", "path": self.path}).encode()
            )
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the sender gave up waiting (timeout) or was killed

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_port}/notify?token={TOKEN}"
    yield state
    state.release.set()
    server.shutdown()


def _send_in_process(instance: DagsterInstance, pg_url: str) -> dict[str, Any]:
    result = send_customer_alerts_job.execute_in_process(
        instance=instance, resources={"postgres": PostgresResource(url=pg_url)}
    )
    assert result.success
    output = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_OUTPUT)
    return {k: getattr(v, "value", v) for k, v in output.step_output_data.metadata.items()}


def _sender_env(outbox: Outbox, dagster_home: Path, receiver: Receiver, timeout_s: float) -> dict[str, str]:
    return {
        **os.environ,
        "BUFFALO_PG_URL": outbox.pg_url,
        "DAGSTER_HOME": str(dagster_home),
        "BUFFALO_CUSTOMER_ALERT_WEBHOOK": receiver.url,
        "BUFFALO_CUSTOMER_ALERT_SECRET": SECRET,
        "BUFFALO_CUSTOMER_ALERT_TIMEOUT_S": str(timeout_s),
        "BUFFALO_CUSTOMER_ALERT_RETRY_S": "0",
    }


def test_every_alert_arrives_exactly_once_with_two_overlapping_sender_runs_and_one_killed(
    outbox: Outbox,
    instance: DagsterInstance,
    dagster_home: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _reset_delivery(outbox.engine)
    alerts = set(_outbox(outbox.engine)["alert_id"])
    timeout_s = 2.0
    env = _sender_env(outbox, dagster_home, receiver, timeout_s)
    command = [str(ROOT / ".venv" / "bin" / "dagster"), "job", "execute",
               "-m", "buffalo_assets.definitions", "-j", JOB_NAME]  # fmt: skip
    senders = [
        subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]  # fmt: skip
    victim, survivor = senders
    receiver.pids = [victim.pid, survivor.pid]
    try:
        assert receiver.held.wait(240), "the two sender runs never both posted"
        assert survivor.poll() is None, "the runs must overlap: the other one is still sending"
        os.killpg(victim.pid, signal.SIGKILL)  # mid-batch: its POST is in flight, not committed
        victim.wait(30)
        receiver.release.set()
        out, _ = survivor.communicate(timeout=300)
    finally:
        for process in senders:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert survivor.returncode == 0, out
    assert TOKEN not in out
    # The killed run is released (marked failed) as the deployment's release_dead_runs_sensor
    # would, so the sensor is not held back by it and no other test's instance sees it.
    released = release_dead_runs(instance)
    assert len(released) == 1 and instance.get_run_by_id(released[0]).status == DagsterRunStatus.FAILURE
    # Later runs (the sensor's, every minute) deliver what failed or was left behind.
    for key in (
        "BUFFALO_CUSTOMER_ALERT_WEBHOOK",
        "BUFFALO_CUSTOMER_ALERT_SECRET",
        "BUFFALO_CUSTOMER_ALERT_TIMEOUT_S",
        "BUFFALO_CUSTOMER_ALERT_RETRY_S",
    ):
        monkeypatch.setenv(key, env[key])
    for _ in range(10):
        metadata = _send_in_process(instance, outbox.pg_url)
        assert TOKEN not in json.dumps(metadata)
        if metadata["sent"] == metadata["failed"] == metadata["gave_up"] == 0:
            break

    rows = _outbox(outbox.engine)
    assert rows["sent_at"].notna().all() and rows["gave_up_at"].isna().all()
    # Every alert arrived, and the service acted on each exactly once (by key and by count).
    # (`notifications` holds each key once by construction; the count per key is checked on
    # the POSTs below.)
    assert set(receiver.notifications) == alerts
    assert receiver.unsigned == 0, "every POST carried a signature the receiver verified"
    posts = Counter(p["key"] for p in receiver.posts)
    held = receiver.held_key
    assert held is not None
    # A row is POSTed again only after a failed or unacknowledged try: a 500, a slow answer
    # past the timeout, or the POST the killed run never committed.
    for key, count in posts.items():
        if count > 1:
            assert _fault(key) != "ok" or key == held, (key, count)
    assert posts[held] >= 2
    # Once marked sent (after a 2xx), never POSTed again.
    sent_at = dict(zip(rows["alert_id"], rows["sent_at"], strict=True))
    for post in receiver.posts:
        assert post["at"] <= sent_at[post["key"]].timestamp(), post["key"]
    # Both runs sent (they overlapped), and the attempts in the rows match the POSTs seen.
    assert {p["pid"] for p in receiver.posts} >= {victim.pid, survivor.pid}
    attempts = dict(zip(rows["alert_id"], rows["attempts"], strict=True))
    assert all(attempts[k] <= posts[k] for k in posts)
    # The runs' logs and metadata carry neither the webhook's token nor an address.
    _assert_nothing_personal_or_secret(instance, outbox.addresses)


def _assert_nothing_personal_or_secret(instance: DagsterInstance, addresses: list[str]) -> None:
    runs = instance.get_runs(RunsFilter(job_name=JOB_NAME))
    assert runs
    for dagster_run in runs:
        text = json.dumps(
            [str(r.dagster_event or r.user_message) for r in instance.all_logs(dagster_run.run_id)]
        )
        text += json.dumps(dagster_run.run_config) + json.dumps(dagster_run.tags)
        assert TOKEN not in text
        assert not any(address in text for address in addresses[:200])


def test_the_sender_backs_off_retries_and_gives_up_visibly(
    outbox: Outbox, instance: DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reset_delivery(outbox.engine)
    keys = sorted(k for k in _outbox(outbox.engine)["alert_id"] if _fault(k) == "ok")
    refused, broken = keys[0], keys[1]
    receiver.refuse, receiver.broken = {refused}, {broken}
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_SECRET", SECRET)
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_TIMEOUT_S", "1")
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_RETRY_S", "3600")

    first = _send_in_process(instance, outbox.pg_url)
    assert first["gave_up"] == 1 and first["failed"] >= 1 and first["sent"] > 0
    assert first["errors"]["HTTP 422 Unprocessable Entity"] == 1
    with outbox.engine.connect() as connection:
        row = connection.execute(sa.text(f"SELECT * FROM {OUTBOX} WHERE alert_id = :k"), {"k": broken}).one()
        refused_row = connection.execute(
            sa.text(f"SELECT * FROM {OUTBOX} WHERE alert_id = :k"), {"k": refused}
        ).one()
    # A 4xx refusal: given up at once, the status in the row.
    assert refused_row.gave_up_at is not None and refused_row.attempts == 1
    # Status and reason only: never the answer's body, which echoed the token here.
    assert refused_row.last_error == "HTTP 422 Unprocessable Entity"
    # A 503: retried, not before the backoff (an hour after the first failure).
    assert row.attempts == 1 and row.last_error == "HTTP 503 Service Unavailable" and row.gave_up_at is None
    assert row.next_attempt_at > datetime.now(UTC) + timedelta(minutes=59)
    # The next run (a minute later) leaves every failed alert alone until its backoff is over.
    second = _send_in_process(instance, outbox.pg_url)
    assert second["sent"] == second["failed"] == second["gave_up"] == 0
    assert Counter(p["key"] for p in receiver.posts)[broken] == 1

    # An hour later (moved by hand), each run tries again until the third attempt fails.
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_RETRY_S", "0")
    with outbox.engine.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE {OUTBOX} SET next_attempt_at = now() WHERE next_attempt_at IS NOT NULL")
        )
    gave_up = 0
    for _ in range(5):
        gave_up += _send_in_process(instance, outbox.pg_url)["gave_up"]
    assert gave_up == 1
    assert Counter(p["key"] for p in receiver.posts)[broken] == 3
    rows = _outbox(outbox.engine).set_index("alert_id")
    assert pd.notna(rows.loc[broken, "gave_up_at"]) and rows.loc[broken, "attempts"] == 3
    assert rows.drop([refused, broken])["sent_at"].notna().all()


def test_the_sender_sensor_skips_saying_why_and_requests_a_run_when_alerts_are_due(
    outbox: Outbox, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = {"postgres": PostgresResource(url=outbox.pg_url)}
    monkeypatch.delenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", raising=False)
    _reset_delivery(outbox.engine)
    with build_sensor_context(instance=instance, resources=resources) as context:
        skipped = send_customer_alerts_sensor(context)
    assert isinstance(skipped, SkipReason) and skipped.skip_message == WEBHOOK_UNSET
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", f"http://127.0.0.1:9/notify?token={TOKEN}")
    monkeypatch.delenv("BUFFALO_CUSTOMER_ALERT_SECRET", raising=False)
    with build_sensor_context(instance=instance, resources=resources) as context:
        unsigned = send_customer_alerts_sensor(context)
    assert isinstance(unsigned, SkipReason) and unsigned.skip_message == UNSIGNED
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_SECRET", SECRET)
    with build_sensor_context(instance=instance, resources=resources) as context:
        requested = send_customer_alerts_sensor(context)
    assert isinstance(requested, RunRequest)
    assert TOKEN not in json.dumps(requested.tags)
    # While a sender run is still going, the sensor waits instead of piling up runs ...
    going = instance.create_run_for_job(
        send_customer_alerts_job, run_config={}, status=DagsterRunStatus.STARTED
    )
    with build_sensor_context(instance=instance, resources=resources) as context:
        waiting = send_customer_alerts_sensor(context)
    assert isinstance(waiting, SkipReason) and f"run {going.run_id[:8]}" in str(waiting.skip_message)
    # ... and a run that never ended (killed) holds it back only for RUN_WAIT_MINUTES.
    instance.report_run_failed(going)
    with build_sensor_context(instance=instance, resources=resources) as context:
        assert isinstance(send_customer_alerts_sensor(context), RunRequest)
    with outbox.engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {OUTBOX} SET sent_at = now()"))
    with build_sensor_context(instance=instance, resources=resources) as context:
        idle = send_customer_alerts_sensor(context)
    assert isinstance(idle, SkipReason) and "no customer alert is due" in str(idle.skip_message)


def test_an_unreachable_webhook_stops_the_run_early_and_a_malformed_one_is_refused(
    outbox: Outbox, instance: DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reset_delivery(outbox.engine)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_SECRET", SECRET)
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", f"http://127.0.0.1:{port}/notify?token={TOKEN}")
    metadata = _send_in_process(instance, outbox.pg_url)
    # Three alerts tried, then the run stopped instead of spending an attempt of every alert.
    assert (metadata["sent"], metadata["failed"], metadata["gave_up"]) == (0, 3, 0)
    assert "unreachable or misconfigured 3 times in a row" in metadata["stopped"]
    rows = _outbox(outbox.engine)
    tried = rows[rows["attempts"] > 0]
    assert len(tried) == 3 and tried["last_error"].str.startswith("connection failed").all()
    assert TOKEN not in json.dumps(metadata) + "".join(tried["last_error"])

    # A webhook path the service does not have (404, its page echoing the URL): the setting
    # is wrong, not the alerts, so none is given up and the run stops the same way.
    _reset_delivery(outbox.engine)
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", receiver.url.replace("/notify", "/wrong"))
    metadata = _send_in_process(instance, outbox.pg_url)
    assert (metadata["sent"], metadata["failed"], metadata["gave_up"]) == (0, 3, 0)
    assert "3 times in a row" in metadata["stopped"]
    tried = _outbox(outbox.engine).query("attempts > 0")
    assert len(tried) == 3 and (tried["last_error"] == "HTTP 404 Not Found").all()
    assert TOKEN not in json.dumps(metadata) + "".join(tried["last_error"])

    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", f"hooks.example/notify?token={TOKEN}")
    result = send_customer_alerts_job.execute_in_process(
        instance=instance, resources={"postgres": PostgresResource(url=outbox.pg_url)}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    said = failure.step_failure_data.user_failure_data.description
    assert "BUFFALO_CUSTOMER_ALERT_WEBHOOK must be an http:// or https:// URL" in said
    assert TOKEN not in said + failure.step_failure_data.error.to_string()
    assert (_outbox(outbox.engine)["attempts"] > 0).sum() == 3  # nothing more was tried


def test_each_alert_is_signed_so_its_receiver_can_verify_it_and_a_tampered_one_fails() -> None:
    body = json.dumps({"alert_id": "31000001:late", "message": "Your parcel is late"})
    headers = signature_headers(signing_key(SECRET), "31000001:late", body, now=time.time())
    assert headers["webhook-signature"].startswith("v1,") and headers["webhook-id"] == "31000001:late"
    # Verified with the Standard Webhooks library, as the receiver would ...
    assert Webhook(SECRET).verify(body, headers)["message"] == "Your parcel is late"
    # ... and refused when anything was changed on the way, or signed with another key.
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("late", "early"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "31000002:late"})
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    # A signature of yesterday is refused too (the receiver's replay window).
    stale = signature_headers(signing_key(SECRET), "31000001:late", body, now=time.time() - 86_400)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, stale)


def test_no_alert_leaves_unsigned_and_a_malformed_secret_is_named_never_quoted(
    outbox: Outbox, instance: DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reset_delivery(outbox.engine)
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", receiver.url)
    weak = "whsec_" + base64.b64encode(b"short-key").decode()
    for secret, said in ((None, UNSIGNED), (weak, "holds 9 bytes"), ("not base64!", "must be 'whsec_'")):
        if secret is None:
            monkeypatch.delenv("BUFFALO_CUSTOMER_ALERT_SECRET", raising=False)
        else:
            monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_SECRET", secret)
        result = send_customer_alerts_job.execute_in_process(
            instance=instance,
            resources={"postgres": PostgresResource(url=outbox.pg_url)},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
        description = failure.step_failure_data.user_failure_data.description
        assert said in description, description
        assert secret is None or secret not in description + failure.step_failure_data.error.to_string()
    assert receiver.posts == [] and (_outbox(outbox.engine)["attempts"] == 0).all()


# -- re-sending what the sender gave up on -------------------------------------------------


def _sent_long_ago_except(engine: sa.Engine, keys: list[str]) -> None:
    """Every alert but `keys` was delivered a day ago; `keys` are unsent and never tried."""
    _reset_delivery(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"UPDATE {OUTBOX} SET sent_at = now() - interval '1 day', attempts = 1 "
                "WHERE alert_id <> ALL(CAST(:keys AS text[]))"
            ),
            {"keys": keys},
        )


def test_alerts_given_up_while_the_service_was_down_are_delivered_after_a_resend(
    outbox: Outbox, instance: DagsterInstance, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = sorted(k for k in _outbox(outbox.engine)["alert_id"] if _fault(k) == "ok")[:5]
    down, earlier, sent_anyway = keys[:3], keys[3], keys[4]
    _sent_long_ago_except(outbox.engine, [*down, earlier])
    with outbox.engine.begin() as connection:
        # Given up two days ago, before the outage below.
        connection.execute(
            sa.text(
                f"UPDATE {OUTBOX} SET gave_up_at = now() - interval '2 days', attempts = 8, "
                "last_error = 'HTTP 503 Service Unavailable' WHERE alert_id = :k"
            ),
            {"k": earlier},
        )
        # Sent, yet marked given up too (no sender leaves a row so): a resend must leave it alone.
        connection.execute(
            sa.text(f"UPDATE {OUTBOX} SET gave_up_at = now() WHERE alert_id = :k"), {"k": sent_anyway}
        )
        outage_began = connection.execute(sa.text("SELECT now()")).scalar_one()
    sent_before = _outbox(outbox.engine).query("sent_at.notna()").set_index("alert_id")

    # The notification service is down (nothing listens), and one failed POST is all an alert gets.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_SECRET", SECRET)
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", f"http://127.0.0.1:{port}/notify?token={TOKEN}")
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_MAX_ATTEMPTS", "1")
    assert _send_in_process(instance, outbox.pg_url)["gave_up"] == 3
    # It is back, but the sender does not send what it gave up on by itself ...
    monkeypatch.setenv("BUFFALO_CUSTOMER_ALERT_WEBHOOK", receiver.url)
    sensor_resources = {"postgres": PostgresResource(url=outbox.pg_url)}
    with build_sensor_context(instance=instance, resources=sensor_resources) as context:
        idle = send_customer_alerts_sensor(context)
    assert isinstance(idle, SkipReason) and idle.skip_message == "no customer alert is due"
    assert _send_in_process(instance, outbox.pg_url)["sent"] == 0 and receiver.posts == []

    # ... until they are re-sent: those given up since the outage began, the sensor's next
    # tick starts a run, and each arrives.
    assert resend_given_up(outbox.engine, since=outage_began) == 3
    rows = _outbox(outbox.engine).set_index("alert_id")
    assert rows.loc[down, "gave_up_at"].isna().all() and (rows.loc[down, "attempts"] == 0).all()
    assert pd.notna(rows.loc[earlier, "gave_up_at"])  # given up before `since`: left as it was
    with build_sensor_context(instance=instance, resources=sensor_resources) as context:
        requested = send_customer_alerts_sensor(context)
    assert isinstance(requested, RunRequest) and requested.tags["buffalo/alerts_due"] == "3"
    assert _send_in_process(instance, outbox.pg_url)["sent"] == 3
    assert sorted(receiver.notifications) == down

    # What an operator types: without --since, every alert given up (and not sent) goes back;
    # nothing is left after.
    def resend_command() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "buffalo_assets.cli", "customer-alerts", "resend"],
            env={**os.environ, "BUFFALO_PG_URL": outbox.pg_url}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert resend_command() == "1 customer alert due again; job send_customer_alerts sends them"
    assert resend_command() == "no customer alert was waiting: nothing to re-send"
    assert _send_in_process(instance, outbox.pg_url)["sent"] == 1
    assert sorted(receiver.notifications) == sorted([*down, earlier])
    # Each POSTed once, after its resend; the alerts sent before were not touched.
    assert Counter(p["key"] for p in receiver.posts) == {key: 1 for key in [*down, earlier]}
    after = _outbox(outbox.engine).set_index("alert_id")
    columns = ["sent_at", "attempts", "gave_up_at"]
    pd.testing.assert_frame_equal(after.loc[sent_before.index, columns], sent_before[columns])
    assert after.loc[[*down, earlier], "sent_at"].notna().all()
    with pytest.raises(ValueError, match="timezone-aware"):
        resend_given_up(outbox.engine, since=datetime(2026, 1, 1))  # noqa: DTZ001 - the mistake tested


def test_a_resend_while_the_sender_runs_waits_for_nothing_and_nothing_is_sent_twice(
    outbox: Outbox, receiver: Receiver
) -> None:
    in_flight, given_up = sorted(k for k in _outbox(outbox.engine)["alert_id"] if _fault(k) == "ok")[:2]
    _sent_long_ago_except(outbox.engine, [in_flight, given_up])
    with outbox.engine.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE {OUTBOX} SET gave_up_at = now(), attempts = 8 WHERE alert_id = :k"),
            {"k": given_up},
        )
    # A sender run whose POST of `in_flight` is held by the service: the row stays claimed
    # (locked) until the answer comes.
    receiver.hold_keys = {in_flight}
    totals: list[SendTotals] = []
    sender = threading.Thread(
        target=lambda: totals.append(
            send_due_alerts(outbox.engine, receiver.url, SenderPolicy(timeout_s=60), SECRET)
        )
    )
    sender.start()
    try:
        assert receiver.held.wait(60), "the sender never posted"
        started = time.monotonic()
        assert resend_given_up(outbox.engine) == 1
        assert time.monotonic() - started < 5, "the resend waited for the sender's row lock"
    finally:
        receiver.release.set()
        sender.join(90)
    assert not sender.is_alive()
    # The running sender sent the held alert, then the one put back meanwhile: each once.
    [done] = totals
    assert (done.sent, done.failed, done.gave_up) == (2, 0, 0)
    assert Counter(p["key"] for p in receiver.posts) == {in_flight: 1, given_up: 1}
    rows = _outbox(outbox.engine).set_index("alert_id")
    assert rows.loc[[in_flight, given_up], "sent_at"].notna().all()
    assert rows.loc[[in_flight, given_up], "gave_up_at"].isna().all()


def test_a_change_in_core_makes_automation_request_the_outbox_with_the_analytics(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    # Last in this module: empty_store empties the tables the outbox fixture filled.
    running = start_sandbox(orders=20, start=time.time() - 10 * DAY)
    defs = Definitions(
        assets=[*INGESTION, transform_orders, *ANALYTICS_ASSETS, customer_alerts],
        resources=resources(running, pg_url),
    )
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert run(running, pg_url, instance, EVERYTHING).success  # ingest + core, nothing downstream
    after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert after.get_num_requested(AssetKey("customer_alerts")) == 1
