"""Ingestion through real Dagster machinery, real Postgres and a real sandbox."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ExecuteInProcessResult,
    RunsFilter,
)

from buffalo_assets.operations.runs import release_dead_runs
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.faults import FaultPlan
from buffalo_assets.sandbox.orders import TERMINAL_STAGES
from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import ROOT, SandboxFactory
from tests.pipeline import MATERIALIZE, ApiTarget, metadata_of, run, subprocess_env

# A share of orders in every varied shape the sandbox knows (string and $numberLong ids,
# numbers as text, epoch-ms times, non-ASCII text, JSON labelled text/html or text/plain,
# missing keys, unknown fields): the real API's possible ways, in every ingestion test.
VARIATIONS = 0.3


def ingest(
    running: RunningSandbox,
    pg_url: str,
    instance: DagsterInstance,
    *,
    password: str | None = None,
    run_config: dict[str, Any] | None = None,
    **client: Any,
) -> ExecuteInProcessResult:
    return run(running, pg_url, instance, password=password, run_config=run_config, **client)


def stored_versions(engine: sa.Engine) -> Counter[str]:
    with engine.connect() as connection:
        return Counter(connection.execute(sa.text("SELECT order_id FROM raw.order_versions")).scalars())


def truth_ids(running: RunningSandbox) -> set[str]:
    return {row["order_id"] for row in SandboxControl(running.url).truth()}


def test_the_first_run_stores_every_order_exactly_once(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=300)
    result = ingest(running, pg_url, instance)
    assert result.success
    versions = stored_versions(empty_store)
    assert set(versions) == truth_ids(running)
    assert set(versions.values()) == {1}
    ids_meta, raw_meta = metadata_of(result, "order_ids"), metadata_of(result, "raw_orders")
    assert ids_meta["total"] == ids_meta["new_since_last_run"] == 300
    assert ids_meta["dagster/row_count"] == 300
    assert raw_meta["dagster/table_name"] == "raw.order_versions"
    assert raw_meta["dagster/row_count"] == raw_meta["fetched"] == raw_meta["new_versions"] == 300
    columns = [c.name for c in raw_meta["dagster/column_schema"].columns]
    assert columns == [
        "order_id",
        "payload",
        "payload_sha256",
        "first_fetched_at",
        "last_fetched_at",
        "run_id",
    ]
    assert raw_meta["failed"] == 0 and raw_meta["orders_per_s"] > 0
    with empty_store.connect() as connection:
        latest = connection.execute(sa.text("SELECT count(*) FROM raw.orders")).scalar_one()
    assert latest == 300


def test_the_fetch_is_logged_and_timed_in_the_asset_before_the_io_manager_writes(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=250)
    result = ingest(running, pg_url, instance)
    assert result.success
    raw_meta = metadata_of(result, "raw_orders")
    assert raw_meta["fetch_s"] > 0 and raw_meta["write_s"] > 0
    assert raw_meta["rows_written"] == raw_meta["fetched"] == 250 and raw_meta["chunks"] == 1
    logs = [r for r in instance.all_logs(result.run_id) if r.step_key == "ingest"]
    progress = next(i for i, r in enumerate(logs) if "fetched 250 of 250 orders, 0 failed" in r.user_message)
    written = next(
        i
        for i, r in enumerate(logs)
        if r.dagster_event is not None
        and r.dagster_event.event_type == DagsterEventType.HANDLED_OUTPUT
        and r.dagster_event.event_specific_data.output_name == "raw_orders"
    )
    assert progress < written


def test_a_rerun_with_nothing_changed_adds_no_version_and_reads_one_list_page(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=400)
    assert ingest(running, pg_url, instance).success
    running.sandbox.stats.clear()
    result = ingest(running, pg_url, instance)
    assert result.success
    in_flight = {
        row["order_id"] for row in SandboxControl(running.url).truth() if row["stage"] not in TERMINAL_STAGES
    }
    # Plus the rolling re-verification of final orders (BUFFALO_REVERIFY_SHARE, 1%).
    reverified = math.ceil(0.01 * (400 - len(in_flight)))
    raw_meta = metadata_of(result, "raw_orders")
    assert raw_meta["new_versions"] == 0
    assert raw_meta["reverified"] == reverified >= 1
    assert raw_meta["fetched"] == raw_meta["unchanged"] == len(in_flight) + reverified < 400
    assert running.sandbox.stats["requests.list"] == 1
    assert running.sandbox.stats["requests.detail"] == len(in_flight) + reverified
    assert sum(stored_versions(empty_store).values()) == 400


def test_a_first_run_fetches_details_while_the_list_is_still_being_walked(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """One `ingest` step: the details of the first page's orders are asked for before the last
    page is listed, with no more requests in flight than `concurrency` plus the list's own."""
    running = start_sandbox(orders=600, faults=FaultPlan(latency_ms=20))
    result = ingest(running, pg_url, instance, concurrency=4)
    assert result.success
    first_detail, _ = running.sandbox.first_last["detail"]
    _, last_page = running.sandbox.first_last["list"]
    assert first_detail < last_page
    assert running.sandbox.stats["requests.list"] == 40  # each page once (15 orders a page)
    assert running.sandbox.stats["max_in_flight"] <= 4 + 1  # 4 details and 1 list page (4 / 10, rounded up)
    assert metadata_of(result, "order_ids")["new_since_last_run"] == 600
    assert metadata_of(result, "raw_orders")["fetched"] == 600
    assert set(stored_versions(empty_store)) == truth_ids(running)
    with empty_store.connect() as connection:
        ids = connection.execute(sa.text("SELECT count(*) FROM raw.order_ids")).scalar_one()
    assert ids == 600


def test_a_list_failing_while_details_are_fetched_fails_the_run_and_stores_nothing_of_it(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """The walk and the fetch overlap; a walk that cannot finish fails the step (retried, then
    the run, saying why) and what was fetched meanwhile is not half-stored."""
    running = start_sandbox(orders=100)
    assert ingest(running, pg_url, instance).success
    before = stored_versions(empty_store)
    SandboxControl(running.url).advance(days=2)  # orders on their way change
    SandboxControl(running.url).set_faults(busy=1.0)  # every list page answers "busy"
    running.sandbox.stats.clear()
    result = ingest(running, pg_url, instance, backoff_base=0.01, backoff_max=0.02)
    assert not result.success
    retries = result.filter_events(lambda e: e.event_type == DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 2
    error = result.get_run_failure_event().event_specific_data.error
    assert error is not None
    assert "Buffalo order list unavailable" in error.message and "Exceeded max_retries" not in error.message
    assert running.sandbox.stats["requests.detail"] > 0  # the known orders were being fetched
    assert stored_versions(empty_store) == before
    with empty_store.connect() as connection:
        walks = connection.execute(sa.text("SELECT count(*) FROM ops.list_walks")).scalar_one()
        ids = connection.execute(sa.text("SELECT count(*) FROM raw.order_ids")).scalar_one()
    assert walks == 1  # the first run's; the failed walks are not recorded
    assert ids == 100  # no id of the failed walks either (orders arrived since: none of them)


def test_a_later_full_walk_lists_first_at_full_concurrency_then_fetches(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """Mostly known ids: overlapping would list on 1 connection beside the few details due."""
    running = start_sandbox(orders=300, faults=FaultPlan(latency_ms=5))
    assert ingest(running, pg_url, instance, concurrency=4).success
    SandboxControl(running.url).add_orders(15)
    running.sandbox.first_last.clear()
    full_walk = {"ops": {"ingest": {"config": {"full_walk": True}}}}
    result = ingest(running, pg_url, instance, concurrency=4, run_config=full_walk)
    assert result.success
    _, last_page = running.sandbox.first_last["list"]
    first_detail, _ = running.sandbox.first_last["detail"]
    assert last_page < first_detail
    assert metadata_of(result, "order_ids")["new_since_last_run"] == 15
    assert metadata_of(result, "order_ids")["full_walk"] is True
    assert set(stored_versions(empty_store)) == truth_ids(running)


def test_advancing_the_clock_adds_exactly_the_changed_orders_versions(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=400)
    sandbox = running.sandbox
    assert ingest(running, pg_url, instance).success
    before_time, visible_before = sandbox.now, sandbox.visible_count()
    arrived = sandbox.advance(2 * 86_400)
    assert arrived > 0
    changed = {
        str(sandbox.book.order_id(i))
        for i in range(visible_before)
        if sandbox.book.detail(i, before_time) != sandbox.book.detail(i, sandbox.now)
    }
    assert changed
    result = ingest(running, pg_url, instance)
    assert result.success
    versions = stored_versions(empty_store)
    assert {order_id for order_id, n in versions.items() if n == 2} == changed
    assert max(versions.values()) == 2
    assert len(versions) == visible_before + arrived
    assert metadata_of(result, "raw_orders")["new_versions"] == len(changed) + arrived
    assert metadata_of(result, "order_ids")["new_since_last_run"] == arrived


def test_with_10_percent_faults_every_order_is_stored_after_at_most_two_runs(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(
        variation_rate=VARIATIONS,
        orders=300,
        faults=FaultPlan.mixed(0.10, retry_after_s=0.05, slow_ms=1500, detail_envelope="mixed"),
    )
    first = ingest(running, pg_url, instance, max_attempts=2)
    assert first.success
    failed_first = metadata_of(first, "raw_orders")["failed"]
    with empty_store.connect() as connection:
        errors = connection.execute(
            sa.text("SELECT order_id, kind, message, run_id FROM ops.fetch_errors")
        ).all()
    assert len(errors) == failed_first > 0  # max_attempts=2 lets some faults through
    assert all(kind and message and run_id == first.run_id for _, kind, message, run_id in errors)
    second = ingest(running, pg_url, instance, max_attempts=6)
    assert second.success
    versions = stored_versions(empty_store)
    assert set(versions) == truth_ids(running)
    assert set(versions.values()) == {1}


def test_an_order_that_fails_for_good_is_quarantined_and_the_run_succeeds(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=60)
    SandboxControl(running.url).mark_gone("31000010")
    result = ingest(running, pg_url, instance)
    assert result.success
    with empty_store.connect() as connection:
        row = connection.execute(sa.text("SELECT order_id, kind, message FROM ops.fetch_errors")).one()
    assert row.order_id == "31000010" and row.kind == "detail_error"
    assert "does not exist" in row.message
    assert len(stored_versions(empty_store)) == 59


def test_a_refused_login_fails_the_run_with_the_reason_and_writes_nothing(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=30)
    result = ingest(running, pg_url, instance, password="wrong-password")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "Buffalo login failed" in str(failure.event_specific_data.error)
    assert "Incorrect username or password" in str(failure.event_specific_data.error)
    assert "wrong-password" not in str(failure.event_specific_data.error)
    assert stored_versions(empty_store) == Counter()


def test_too_many_failures_fail_the_run_but_keep_what_was_fetched(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=200)
    assert ingest(running, pg_url, instance, run_config=None).success
    SandboxControl(running.url).set_faults(server_error=0.6)
    result = ingest(
        running,
        pg_url,
        instance,
        max_attempts=1,
        run_config={"ops": {"ingest": {"config": {"full_refresh": True, "max_failure_share": 0.2}}}},
    )
    assert not result.success
    # Transient faults: retried once (the retry policy), and the last attempt's failure says why.
    assert len(result.filter_events(lambda e: e.event_type == DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    message = failure.event_specific_data.error.message
    assert "could not be fetched" in message and "more than the allowed 20%" in message
    assert "Exceeded max_retries" not in message
    assert len(stored_versions(empty_store)) == 200  # nothing lost or half-written


def test_a_run_failing_on_orders_the_api_no_longer_has_says_why_at_the_top(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """The demo-then-other-sandbox case: the stored orders do not exist in the API being read.

    The run's own failure (the top-level error of the run in the UI) names the reason, not
    "Exceeded max_retries of 1", and a failure no retry can fix is not retried.
    """
    first = start_sandbox(orders=200, seed=11)
    assert ingest(first, pg_url, instance).success
    other = start_sandbox(orders=20, seed=11)  # another world: orders 21..200 do not exist there
    result = ingest(other, pg_url, instance)
    assert not result.success
    assert not result.filter_events(lambda e: e.event_type == DagsterEventType.STEP_UP_FOR_RETRY)
    run_failure = result.get_run_failure_event()
    error = run_failure.event_specific_data.error
    assert error is not None
    assert "Exceeded max_retries" not in error.message
    # Most orders answering that they do not exist is a wrong account, not deletions.
    assert "orders (" in error.message and "answered that they do not exist: " in error.message
    assert "Order does not exist" in error.message and "BUFFALO_MAX_GONE_SHARE" in error.message
    step_failure = result.get_step_failure_events()[0]
    assert step_failure.step_key == "ingest"
    assert step_failure.event_specific_data.error.message == error.message
    # What the UI shows is what the instance stored for the run.
    stored = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.RUN_FAILURE).records
    assert "Order does not exist" in stored[0].event_log_entry.dagster_event.event_specific_data.error.message


def test_a_run_killed_mid_fetch_is_released_and_the_rerun_stores_every_order_once(
    start_sandbox: SandboxFactory,
    pg_url: str,
    dagster_home: Path,
    instance: DagsterInstance,
    empty_store: sa.Engine,
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=1_500, faults=FaultPlan(latency_ms=25))
    env = subprocess_env(running, pg_url, dagster_home, BUFFALO_CONCURRENCY="4")
    process = subprocess.Popen(
        MATERIALIZE,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Killed mid-fetch: some details were served, not all (the run has written none of them yet).
    deadline = time.monotonic() + 120
    while running.sandbox.stats["requests.detail"] < 500:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 500 <= running.sandbox.stats["requests.detail"] < 1_500
    assert sum(stored_versions(empty_store).values()) < 1_500

    before = {r.run_id for r in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]))}
    released = [run_id for run_id in release_dead_runs(instance) if run_id not in before]
    assert len(released) == 1
    assert instance.get_run_by_id(released[0]).status == DagsterRunStatus.FAILURE

    rerun = subprocess.run(MATERIALIZE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    versions = stored_versions(empty_store)
    assert set(versions) == truth_ids(running)
    assert set(versions.values()) == {1}


def test_two_runs_started_together_take_turns_on_the_api_pool(
    start_sandbox: SandboxFactory,
    pg_url: str,
    dagster_home: Path,
    instance: DagsterInstance,
    empty_store: sa.Engine,
) -> None:
    running = start_sandbox(variation_rate=VARIATIONS, orders=300, faults=FaultPlan(latency_ms=20))
    env = subprocess_env(running, pg_url, dagster_home, BUFFALO_CONCURRENCY="4")
    before = {r.run_id for r in instance.get_runs()}
    processes = [
        subprocess.Popen(MATERIALIZE, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    runs = [
        r
        for r in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        if r.run_id not in before
    ]
    assert len(runs) == 2
    intervals = []
    for finished in runs:
        starts: dict[str, float] = {}
        for record in instance.all_logs(finished.run_id):
            event = record.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                starts[event.step_key] = record.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS:
                intervals.append((starts[event.step_key], record.timestamp, finished.run_id))
    assert len(intervals) == 2  # one `ingest` step per run
    intervals.sort()
    for (_, end, run_a), (start, _, run_b) in zip(intervals, intervals[1:], strict=False):
        assert end <= start or run_a == run_b, "two runs used the Buffalo API at the same time"
    assert len(stored_versions(empty_store)) == 300


def test_an_unreachable_api_fails_the_run_after_its_retries_with_the_reason_at_the_top(
    pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """The retry policy of order_ids (2 retries) is used up; the run's error still says why."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    target = ApiTarget(url, "ops@solo.example", "s3cret-password")
    result = run(target, pg_url, instance, backoff_base=0.01, backoff_max=0.02)
    assert not result.success
    retries = result.filter_events(lambda e: e.event_type == DagsterEventType.STEP_UP_FOR_RETRY)
    assert [e.step_key for e in retries] == ["ingest", "ingest"]
    error = result.get_run_failure_event().event_specific_data.error
    assert error is not None
    assert "Exceeded max_retries" not in error.message
    assert "Buffalo API unavailable" in error.message and url in error.message
    assert "s3cret-password" not in str(error)
    assert stored_versions(empty_store) == Counter()


def test_an_ingest_runs_every_step_in_the_command_s_own_process(
    start_sandbox: SandboxFactory,
    pg_url: str,
    dagster_home: Path,
    instance: DagsterInstance,
    empty_store: sa.Engine,
) -> None:
    """No process per step: each used to start Dagster and the project again (5-6 s each)."""
    running = start_sandbox(orders=120)
    env = subprocess_env(running, pg_url, dagster_home)
    before = {r.run_id for r in instance.get_runs()}
    process = subprocess.Popen(MATERIALIZE, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    (run_id,) = [r.run_id for r in instance.get_runs() if r.run_id not in before]
    steps: dict[str, set[int]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.step_key is not None and event.pid is not None:
            steps.setdefault(event.step_key, set()).add(event.pid)
    assert set(steps) == {"ingest"}
    assert set().union(*steps.values()) == {process.pid}
    assert len(stored_versions(empty_store)) == 120

    # The same for the jobs the schedule and the UI launch (asset jobs of any selection).
    from buffalo_assets.definitions import defs

    for job in ("ingest_orders", "refresh_all", "__ASSET_JOB"):
        assert defs.resolve_job_def(job).executor_def.name == "in_process", job


def test_an_ingest_logs_in_once_and_a_ticket_the_api_dropped_is_replaced_by_a_fresh_login(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """One login per ingest (a key fetch, a login call and an RSA encryption) for the walk and
    the fetch together; each run logs in itself (Dagster makes the resource anew per run)."""
    running = start_sandbox(orders=40)
    assert ingest(running, pg_url, instance).success
    assert running.sandbox.stats["logins.ok"] == 1
    SandboxControl(running.url).advance(days=1)
    assert ingest(running, pg_url, instance).success
    assert running.sandbox.stats["logins.ok"] == 2

    # Tickets the API stops accepting while a run goes on (expired, the service restarted):
    # the refused call logs in again once, and the list and the details go on with that ticket.
    SandboxControl(running.url).set_faults(ticket_ttl_s=0.5, latency_ms=50)  # a run of ~1 s
    SandboxControl(running.url).advance(days=1)
    everything = {"ops": {"ingest": {"config": {"full_refresh": True}}}}
    again = ingest(running, pg_url, instance, run_config=everything, concurrency=2)
    assert again.success
    assert metadata_of(again, "raw_orders")["relogins"] >= 1
    assert running.sandbox.stats["logins.ok"] == 3 + metadata_of(again, "raw_orders")["relogins"]
    assert set(stored_versions(empty_store)) == truth_ids(running)
