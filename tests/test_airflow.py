"""Airflow keeps its contract: real Airflow runs DAG `buffalo_orders` against a real Dagster.

Airflow 3 lives in its own virtualenv (`airflow/.venv`, `make airflow-venv`), Airflow 2.11
in another (`airflow/.venv2`, `make airflow-venv2`); `make test` makes both first.
Dagster runs as `dagster dev` (webserver + daemon) on a free port, on the session
database, with a sandbox as its Buffalo API. The "real deployment" tests run Airflow's
API server, scheduler (LocalExecutor), DAG processor and triggerer through
`airflow/supervise.py` (what `make airflow` runs) on a throw-away PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.test_utils import create_run_for_test
from sqlalchemy.engine import make_url

from buffalo_assets.operations.runs import release_pool_slots, slot_holding_run_ids
from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.server import RunningSandbox, free_port, running_sandbox
from tests.conftest import ROOT
from tests.pipeline import stop_group

AIRFLOW_VENV = ROOT / "airflow" / ".venv"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
AIRFLOW2_VENV = ROOT / "airflow" / ".venv2"
AIRFLOW2 = AIRFLOW2_VENV / "bin" / "airflow"
DAGSTER = ROOT / ".venv" / "bin" / "dagster"
POOL = "buffalo_api"
DAG_ID = "buffalo_orders"

needs_airflow = pytest.mark.skipif(
    not AIRFLOW.exists() and os.environ.get("CI") != "true",
    reason="Airflow's virtualenv is missing: run `make airflow-venv` (make test does)",
)
needs_airflow2 = pytest.mark.skipif(
    not AIRFLOW2.exists() and os.environ.get("CI") != "true",
    reason="Airflow 2.11's virtualenv is missing: run `make airflow-venv2` (make test does)",
)


def eventually(check: Callable[[], Any], deadline_s: float, what: str, every_s: float = 0.5) -> Any:
    """Return check()'s first truthy value within the deadline, or fail naming `what`."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, ValueError, KeyError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"{what} did not happen within {deadline_s:.0f} s (last: {last!r})")


# -- Dagster ---------------------------------------------------------------------------------


@dataclass
class DagsterStack:
    url: str
    running: RunningSandbox
    instance: DagsterInstance

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        body.raise_for_status()
        payload = body.json()
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def launch(self, *asset_keys: str, tags: dict[str, str] | None = None) -> str:
        repository = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError"
            " { ... on RepositoryLocation { repositories { name } } } } } } }"
        )["workspaceOrError"]["locationEntries"][0]["locationOrLoadError"]["repositories"][0]["name"]
        params = {
            "selector": {
                "repositoryLocationName": "buffalo_assets",
                "repositoryName": repository,
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": [key]} for key in asset_keys],
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        launched = self.graphql(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename"
            " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
            p=params,
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def status(self, run_id: str) -> DagsterRunStatus:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None, f"Dagster has no run {run_id}"
        return run.status

    def runs(self, **tags: str) -> list:
        """Dagster runs carrying `tags`, oldest first."""
        return list(reversed(self.instance.get_runs(filters=RunsFilter(tags=tags))))


def _wait_for_location(url: str, process: subprocess.Popen[str], deadline_s: float) -> None:
    query = "{ assetNodes { assetKey { path } } }"

    def served() -> bool:
        assert process.poll() is None, "dagster dev exited early"
        nodes = requests.post(f"{url}/graphql", json={"query": query}, timeout=5).json()["data"]["assetNodes"]
        return any(node["assetKey"]["path"] == ["raw_orders"] for node in nodes)

    eventually(served, deadline_s, f"Dagster serving the buffalo_assets location at {url}", every_s=1)


@pytest.fixture(scope="module")
def dagster_stack(
    pg_url: str, dagster_home: Path, instance: DagsterInstance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterStack]:
    with running_sandbox(SandboxConfig(orders=60)) as running:
        port = free_port()
        config = running.sandbox.config
        env = {
            **os.environ,
            "BUFFALO_PG_URL": pg_url,
            "DAGSTER_HOME": str(dagster_home),
            "BUFFALO_BASE_URL": running.url,
            "BUFFALO_USERNAME": config.username,
            "BUFFALO_PASSWORD": config.password,
            "BUFFALO_SCHEDULE_ENABLED": "false",
            "BUFFALO_ORCHESTRATOR": "airflow",
        }
        log = (tmp_path_factory.mktemp("dagster") / "dagster-dev.log").open("w")
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_location(url, process, 180)
            yield DagsterStack(url, running, instance)
        finally:
            stop_group(process)
            log.close()


@pytest.fixture
def dagster(dagster_stack: DagsterStack, empty_store: sa.Engine) -> DagsterStack:
    """The module's Dagster with a healthy, fast sandbox and no run holding the API pool."""
    SandboxControl(dagster_stack.running.url).set_faults(reject_logins=False, latency_ms=0)
    eventually(
        lambda: not slot_holding_run_ids(dagster_stack.instance), 120, "the API pool being free at test start"
    )
    return dagster_stack


# -- the pool: no ended run keeps a slot ------------------------------------------------------


def test_ended_runs_pool_slots_are_freed_while_running_runs_keep_theirs(instance: DagsterInstance) -> None:
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(POOL)
    canceled = create_run_for_test(instance, job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED)
    running = create_run_for_test(instance, job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED)
    try:
        assert storage.claim_concurrency_slot(POOL, canceled.run_id, "raw_orders").is_claimed
        instance.report_run_canceled(canceled)
        # The pool is full: a third run's step would wait, "blocked by global concurrency limits".
        assert not storage.claim_concurrency_slot(POOL, running.run_id, "raw_orders").is_claimed

        released = release_pool_slots(instance)

        assert released == [canceled.run_id]
        # The waiting step's next try (steps retry their claim while they wait) gets the slot.
        assert storage.claim_concurrency_slot(POOL, running.run_id, "raw_orders").is_claimed
        assert slot_holding_run_ids(instance) == {running.run_id}  # it is alive: no event names a dead pid
    finally:
        storage.free_concurrency_slots_for_run(running.run_id)
        storage.free_concurrency_slots_for_run(canceled.run_id)


def test_terminating_an_ingest_from_the_ui_cancels_it_instead_of_retrying_its_step(
    dagster: DagsterStack,
) -> None:
    """Terminate (the UI's button, the hook's call) ends the run: the steps run in the run's
    process, and Dagster would otherwise turn the interrupt into a retry of `order_ids`."""
    SandboxControl(dagster.running.url).set_faults(latency_ms=1500)
    run_id = dagster.launch("order_ids", "raw_orders")
    eventually(lambda: run_id in slot_holding_run_ids(dagster.instance), 120, "the run holding the pool")
    terminated = dagster.graphql(
        "mutation($r: String!) { terminateRun(runId: $r) { __typename } }", r=run_id
    )["terminateRun"]
    assert terminated["__typename"] == "TerminateRunSuccess", terminated

    eventually(lambda: dagster.status(run_id) == DagsterRunStatus.CANCELED, 120, "the run canceled")
    kinds = [
        record.dagster_event.event_type_value
        for record in dagster.instance.all_logs(run_id)
        if record.dagster_event
    ]
    assert "STEP_UP_FOR_RETRY" not in kinds and "STEP_RESTARTED" not in kinds
    assert not slot_holding_run_ids(dagster.instance)


@needs_airflow
def test_a_run_worker_killed_mid_fetch_frees_the_pool_and_the_next_run_starts_within_a_minute(
    dagster: DagsterStack,
) -> None:
    SandboxControl(dagster.running.url).set_faults(latency_ms=1500)
    first = dagster.launch("raw_orders", tags={"test": "killed-worker"})
    eventually(
        lambda: first in slot_holding_run_ids(dagster.instance), 120, "the run taking the API pool slot"
    )
    pids = {
        record.dagster_event.pid
        for record in dagster.instance.all_logs(first)
        if record.dagster_event and record.dagster_event.pid
    }
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a step process may have ended already
            os.kill(pid, signal.SIGKILL)
    SandboxControl(dagster.running.url).set_faults(latency_ms=0)

    second = dagster.launch("raw_orders", tags={"test": "after-killed-worker"})
    eventually(
        lambda: dagster.status(second) in (DagsterRunStatus.STARTED, DagsterRunStatus.SUCCESS),
        60 + 30,  # the sensor's 30 s interval plus the daemon's tick, inside a minute and a half
        "the next run starting after its predecessor's worker was killed",
    )
    assert dagster.status(first) == DagsterRunStatus.FAILURE
    eventually(lambda: dagster.status(second) == DagsterRunStatus.SUCCESS, 120, "the next run succeeding")


# -- Airflow 3: `airflow dags test` ----------------------------------------------------------


def airflow_env(
    airflow_home: Path, dagster_url: str, venv: Path = AIRFLOW_VENV, **extra: str
) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(airflow_home)),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_DAGSTER_DEFAULT": dagster_url,
        "BUFFALO_AIRFLOW_POLL_INTERVAL_S": "1",
        **extra,
    }


def airflow(
    args: list[str], airflow_home: Path, dagster_url: str, venv: Path = AIRFLOW_VENV, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = airflow_env(airflow_home, dagster_url, venv, **extra)
    return subprocess.run(
        [str(venv / "bin" / "airflow"), *args], env=env, capture_output=True, text=True, timeout=900
    )


@needs_airflow
def test_the_dag_materializes_both_assets_in_dagster_and_fails_with_dagsters_error(
    dagster: DagsterStack, tmp_path: Path
) -> None:
    running = dagster.running
    home = tmp_path / "airflow_home"
    home.mkdir()
    migrated = airflow(["db", "migrate"], home, dagster.url)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    errors = airflow(["dags", "list-import-errors"], home, dagster.url)
    assert errors.returncode == 0, errors.stderr[-3000:]
    assert DAG_ID not in errors.stdout and "Error" not in errors.stdout, errors.stdout
    before = {run.run_id for run in dagster.runs(**{"airflow/dag_id": DAG_ID})}

    ok = airflow(["dags", "test", DAG_ID, "2026-11-29"], home, dagster.url)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-5000:]
    runs = [run for run in dagster.runs(**{"airflow/dag_id": DAG_ID}) if run.run_id not in before]
    assert [run.tags["airflow/task_id"] for run in runs] == ["get_order_ids", "fetch_and_store_raw"]
    assert len({run.tags["airflow/run_id"] for run in runs}) == 1
    assert {run.tags["airflow/try_number"] for run in runs} == {"1"}
    assert all(run.tags["airflow/logical_date"].startswith("2026-11-29") for run in runs)
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
    assert {tuple(sorted(k.to_user_string() for k in run.asset_selection or ())) for run in runs} == {
        ("order_ids",),
        ("raw_orders",),
    }
    stored = _stored_order_ids(dagster)
    assert stored == {row["order_id"] for row in SandboxControl(running.url).truth()}
    assert f"{dagster.url}/runs/" in ok.stdout + ok.stderr  # the task log links to the Dagster run

    SandboxControl(running.url).set_faults(reject_logins=True)
    with webhook_receiver() as (webhook, alerts):
        failed = airflow(
            ["dags", "test", DAG_ID, "2026-11-30"],
            home,
            dagster.url,
            BUFFALO_AIRFLOW_RETRIES="0",
            BUFFALO_OPS_ALERT_WEBHOOK=webhook,
        )
    assert alerts == []  # a failed Dagster run: Dagster's alert_on_run_failure reports it, once
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 or "failed" in output.lower()
    assert "Buffalo login failed" in output and "Incorrect username or password" in output, output[-5000:]
    assert "ended FAILURE: ingest:" in output  # the failing step, then Dagster's own error
    assert running.sandbox.config.password not in output + ok.stdout + ok.stderr  # no secret in task logs
    assert not any(secret in output for secret in running.sandbox.secrets_seen)
    seen = before | {run.run_id for run in runs}
    runs = [run for run in dagster.runs(**{"airflow/dag_id": DAG_ID}) if run.run_id not in seen]
    assert [run.tags["airflow/task_id"] for run in runs] == ["get_order_ids"]  # the next task never ran
    assert runs[0].status == DagsterRunStatus.FAILURE


@needs_airflow
def test_a_task_failing_without_a_dagster_run_is_posted_to_the_operations_webhook(
    dagster: DagsterStack, tmp_path: Path
) -> None:
    home = tmp_path / "airflow_home"
    home.mkdir()
    migrated = airflow(["db", "migrate"], home, dagster.url)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    unreachable = f"http://127.0.0.1:{free_port()}"  # Dagster is down: only Airflow sees the failure
    with webhook_receiver() as (webhook, alerts):
        failed = airflow(
            ["dags", "test", DAG_ID, "2026-12-01"],
            home,
            unreachable,
            BUFFALO_AIRFLOW_RETRIES="0",
            BUFFALO_OPS_ALERT_WEBHOOK=webhook,
        )
    output = failed.stdout + failed.stderr
    assert [(alert["dag_id"], alert["task_id"], alert["try_number"]) for alert in alerts] == [
        (DAG_ID, "get_order_ids", 1)
    ], output[-4000:]
    assert alerts[0]["text"].startswith(f"Buffalo Orders Platform: Airflow task {DAG_ID}.get_order_ids")
    assert "ConnectError" in alerts[0]["error"] or "Connect" in alerts[0]["error"], alerts[0]["error"]
    assert webhook.rsplit("/", 1)[1] not in output  # the webhook's token is never logged


def _stored_order_ids(dagster: DagsterStack) -> set[str]:
    engine = sa.create_engine(os.environ["BUFFALO_PG_URL"])
    try:
        with engine.connect() as connection:
            return set(
                connection.execute(sa.text("SELECT DISTINCT order_id FROM raw.order_versions")).scalars()
            )
    finally:
        engine.dispose()


# -- Airflow 2.11: the oldest supported line -------------------------------------------------


@needs_airflow2
def test_airflow_2_11_imports_the_dag_and_runs_it_against_dagster(
    dagster: DagsterStack, tmp_path: Path
) -> None:
    home = tmp_path / "airflow2_home"
    home.mkdir()
    version = airflow(["version"], home, dagster.url, AIRFLOW2_VENV)
    assert version.stdout.strip().splitlines()[-1].startswith("2.11"), version.stdout + version.stderr
    migrated = airflow(["db", "migrate"], home, dagster.url, AIRFLOW2_VENV)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    errors = airflow(["dags", "list-import-errors"], home, dagster.url, AIRFLOW2_VENV)
    assert errors.returncode == 0 and "Error" not in errors.stdout, errors.stdout + errors.stderr[-3000:]
    tasks = airflow(["tasks", "list", DAG_ID], home, dagster.url, AIRFLOW2_VENV)
    assert tasks.stdout.split()[-2:] == ["fetch_and_store_raw", "get_order_ids"], tasks.stdout

    before = {run.run_id for run in dagster.runs(**{"airflow/dag_id": DAG_ID})}
    ok = airflow(["dags", "test", DAG_ID, "2026-11-28"], home, dagster.url, AIRFLOW2_VENV)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-5000:]
    runs = [run for run in dagster.runs(**{"airflow/dag_id": DAG_ID}) if run.run_id not in before]
    assert [(run.tags["airflow/task_id"], run.status) for run in runs] == [
        ("get_order_ids", DagsterRunStatus.SUCCESS),
        ("fetch_and_store_raw", DagsterRunStatus.SUCCESS),
    ]


# -- Airflow 3 as deployed: API server, scheduler, DAG processor, triggerer ------------------

# A second DAG next to the real one, waiting in the worker instead of the triggerer: the
# worker process is what an operations team sees killed (OOM, a node lost).
IN_WORKER_DAG = """
from datetime import datetime, timedelta

from dagster_provider import DagsterAssetRunOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

with DAG(dag_id="buffalo_orders_in_worker", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    DagsterAssetRunOperator(
        task_id="fetch_and_store_raw", asset_selection=["raw_orders"], deferrable=False, poll_interval=1,
        retries=1, retry_delay=timedelta(seconds=1),
    )
"""


@dataclass
class AirflowStack:
    api: str
    process: subprocess.Popen[str]
    log: Path

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.process.poll() is None, f"airflow/supervise.py exited: {self.log.read_text()[-3000:]}"
        response = requests.request(method, f"{self.api}/api/v2{path}", json=body, timeout=30)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run_id = f"test__{uuid.uuid4().hex[:8]}"
        self.call(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}},
        )
        return run_id

    def task(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]


@pytest.fixture(scope="module")
def airflow_stack(
    dagster_stack: DagsterStack, pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow3")
    dags = home / "dags"
    dags.mkdir()
    (dags / "buffalo_orders.py").write_text((ROOT / "airflow" / "dags" / "buffalo_orders.py").read_text())
    (dags / "buffalo_orders_in_worker.py").write_text(IN_WORKER_DAG)
    name = f"airflow_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    metadata = make_url(pg_server_url).set(drivername="postgresql+psycopg2", database=name)
    port = free_port()
    env = {
        **airflow_env(home, dagster_stack.url),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.render_as_string(hide_password=False),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__TRIGGERER__TRIGGERER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW_PORT": str(port),
        "BUFFALO_AIRFLOW_RETRIES": "1",
        "BUFFALO_AIRFLOW_RETRY_DELAY_S": "1",
    }
    log = home / "supervise.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(AIRFLOW_VENV / "bin" / "python"), str(ROOT / "airflow" / "supervise.py")],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
    stack = AirflowStack(f"http://127.0.0.1:{port}", process, log)
    try:
        eventually(
            lambda: {dag["dag_id"] for dag in stack.call("GET", "/dags")["dags"]}
            >= {DAG_ID, "buffalo_orders_in_worker"},
            240, "Airflow's API server listing both DAGs", every_s=2,
        )  # fmt: skip
        for dag_id in (DAG_ID, "buffalo_orders_in_worker"):
            stack.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_group(process)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _dag_run_ended(stack: AirflowStack, dag_id: str, run_id: str) -> str | None:
    state = stack.dag_run_state(dag_id, run_id)
    return state if state in ("success", "failed") else None


@needs_airflow
@pytest.mark.slow
def test_scheduler_and_triggerer_run_a_triggered_dag_run_waiting_deferred(
    airflow_stack: AirflowStack, dagster: DagsterStack
) -> None:
    SandboxControl(dagster.running.url).set_faults(latency_ms=800)  # a wait long enough to see
    run_id = airflow_stack.trigger(DAG_ID)
    seen_states: set[str] = set()
    links_while_deferred: list[str | None] = []
    links_path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/fetch_and_store_raw/links"

    def fetch_ended() -> str | None:
        state = airflow_stack.task(DAG_ID, run_id, "fetch_and_store_raw")["state"] or "none"
        seen_states.add(state)
        if state == "deferred":
            links_while_deferred.append(
                airflow_stack.call("GET", links_path)["extra_links"].get("Dagster run")
            )
        return _dag_run_ended(airflow_stack, DAG_ID, run_id)

    assert eventually(fetch_ended, 300, "the DAG run ending") == "success", airflow_stack.log.read_text()[
        -4000:
    ]
    assert "deferred" in seen_states  # the wait happened in the triggerer, no worker slot held
    runs = dagster.runs(**{"airflow/dag_id": DAG_ID, "airflow/run_id": run_id})
    assert [(run.tags["airflow/task_id"], run.status) for run in runs] == [
        ("get_order_ids", DagsterRunStatus.SUCCESS),
        ("fetch_and_store_raw", DagsterRunStatus.SUCCESS),
    ]
    ti = airflow_stack.task(DAG_ID, run_id, "fetch_and_store_raw")
    xcom = airflow_stack.call(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/fetch_and_store_raw/xcomEntries/dagster_run_id"
    )
    value = xcom["value"]
    assert runs[1].run_id in (value, json.loads(value) if value.startswith('"') else None)
    assert ti["try_number"] == 1
    # The task's "Dagster run" link leads to its run, while it waits and once it is done.
    run_url = f"{dagster.url}/runs/{runs[1].run_id}"
    assert links_while_deferred and set(links_while_deferred) == {run_url}
    assert airflow_stack.call("GET", links_path)["extra_links"] == {"Dagster run": run_url}
    # Each task announced the table it updated, for DAGs scheduled on it.
    events = airflow_stack.call("GET", f"/assets/events?source_run_id={run_id}&source_dag_id={DAG_ID}")
    assert {(event["source_task_id"], event["uri"]) for event in events["asset_events"]} == {
        ("get_order_ids", "buffalo://raw/order_ids"),
        ("fetch_and_store_raw", "buffalo://raw/order_versions"),
    }


@needs_airflow
@pytest.mark.slow
def test_clearing_a_task_whose_dagster_run_succeeded_materializes_again(
    airflow_stack: AirflowStack, dagster: DagsterStack
) -> None:
    SandboxControl(dagster.running.url).set_faults(latency_ms=0)
    run_id = airflow_stack.trigger(DAG_ID)
    assert eventually(lambda: _dag_run_ended(airflow_stack, DAG_ID, run_id), 300, "the DAG run") == "success"
    # What a user does in the UI to run a task again: clear it (its DAG run goes back to queued).
    airflow_stack.call(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["fetch_and_store_raw"],
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )

    def cleared_and_ended() -> str | None:
        if airflow_stack.task(DAG_ID, run_id, "fetch_and_store_raw")["try_number"] < 2:
            return None
        return _dag_run_ended(airflow_stack, DAG_ID, run_id)

    assert eventually(cleared_and_ended, 300, "the cleared task's new try ending") == "success"
    runs = dagster.runs(
        **{"airflow/dag_id": DAG_ID, "airflow/run_id": run_id, "airflow/task_id": "fetch_and_store_raw"}
    )
    # A new Dagster run for the new try; the succeeded one was not taken as its result.
    assert sorted(run.tags["airflow/try_number"] for run in runs) == ["1", "2"]
    assert {dagster.status(run.run_id) for run in runs} == {DagsterRunStatus.SUCCESS}


@needs_airflow
@needs_airflow2
@pytest.mark.parametrize("venv", [AIRFLOW_VENV, AIRFLOW2_VENV], ids=["airflow3", "airflow2.11"])
def test_airflow_reads_the_dags_cron_in_south_african_time(venv: Path, tmp_path: Path) -> None:
    """A daily `0 6 * * *` runs at 06:00 in Johannesburg, 04:00 UTC, as Dagster reads it."""
    script = (
        "import runpy, sys; from datetime import datetime, timezone\n"
        "from airflow.timetables.base import TimeRestriction\n"
        "dag = runpy.run_path(sys.argv[1])['dag']\n"
        "try:  # the DAG as the scheduler reads it: serialized\n"
        "    from airflow.serialization.serialized_objects import DagSerialization as S\n"
        "except ImportError:\n"
        "    from airflow.serialization.serialized_objects import SerializedDAG as S\n"
        "dag = S.from_dict(S.to_dict(dag))\n"
        "earliest = datetime(2026, 12, 1, tzinfo=timezone.utc)\n"
        "info = dag.timetable.next_dagrun_info(last_automated_data_interval=None, "
        "restriction=TimeRestriction(earliest=earliest, latest=None, catchup=True))\n"
        "print(info.run_after.astimezone(timezone.utc).isoformat())\n"
    )
    env = {
        **airflow_env(tmp_path, "http://127.0.0.1:1", venv),
        "BUFFALO_ORCHESTRATOR": "airflow",
        "BUFFALO_AIRFLOW_SCHEDULE": "0 6 * * *",
    }
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, str(ROOT / "airflow" / "dags" / "buffalo_orders.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # (Airflow 3 runs at the cron's moment, 2.11 at the end of its data interval: a day later.)
    assert done.stdout.strip().splitlines()[-1] in ("2026-12-01T04:00:00+00:00", "2026-12-02T04:00:00+00:00")


def _worker_pids(ti_id: str) -> list[int]:
    """Processes titled `airflow worker -- <task instance id>` (Airflow 3's task runner)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"airflow worker -- {ti_id}" in title:
                found.append(int(proc.name))
    return found


@needs_airflow
@pytest.mark.slow
def test_a_worker_killed_during_the_wait_is_retried_and_reattaches_to_the_one_dagster_run(
    airflow_stack: AirflowStack, dagster: DagsterStack
) -> None:
    dag_id = "buffalo_orders_in_worker"
    SandboxControl(dagster.running.url).set_faults(latency_ms=1500)
    run_id = airflow_stack.trigger(dag_id)
    eventually(
        lambda: dagster.runs(**{"airflow/dag_id": dag_id, "airflow/run_id": run_id}),
        120,
        "the Dagster run launch",
    )

    def running_task() -> dict[str, Any] | None:
        found = airflow_stack.task(dag_id, run_id, "fetch_and_store_raw")
        return found if found["state"] == "running" else None

    ti = eventually(running_task, 60, "the task running")
    pids = eventually(lambda: _worker_pids(ti["id"]), 30, "the worker process showing up")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # The run keeps going (each request 20 s) until the retry has found it, then finishes.
    SandboxControl(dagster.running.url).set_faults(latency_ms=20_000)
    first = dagster.runs(**{"airflow/dag_id": dag_id, "airflow/run_id": run_id})[0]
    assert dagster.status(first.run_id) in (
        DagsterRunStatus.QUEUED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
    )

    def retry_running() -> bool:
        found = airflow_stack.task(dag_id, run_id, "fetch_and_store_raw")
        return found["try_number"] == 2 and found["state"] == "running"

    eventually(retry_running, 180, "the retry running")
    time.sleep(5)  # the retry looks for the earlier run as it starts
    assert dagster.status(first.run_id) == DagsterRunStatus.STARTED
    SandboxControl(dagster.running.url).set_faults(latency_ms=0)

    state = eventually(lambda: _dag_run_ended(airflow_stack, dag_id, run_id), 300, "the DAG run ending")
    assert state == "success", airflow_stack.log.read_text()[-4000:]
    assert airflow_stack.task(dag_id, run_id, "fetch_and_store_raw")["try_number"] == 2  # the retry did it
    runs = dagster.runs(**{"airflow/dag_id": dag_id, "airflow/run_id": run_id})
    assert [run.run_id for run in runs] == [first.run_id]  # reattached: exactly one Dagster run
    assert runs[0].tags["airflow/try_number"] == "1"
    assert dagster.status(first.run_id) == DagsterRunStatus.SUCCESS


@needs_airflow
@pytest.mark.slow
def test_marking_the_waiting_task_failed_cancels_its_dagster_run_and_the_next_dag_run_succeeds(
    airflow_stack: AirflowStack, dagster: DagsterStack
) -> None:
    SandboxControl(dagster.running.url).set_faults(latency_ms=1500)
    run_id = airflow_stack.trigger(DAG_ID, conf={"full_refresh": True})
    tags = {"airflow/dag_id": DAG_ID, "airflow/run_id": run_id, "airflow/task_id": "fetch_and_store_raw"}
    fetch = eventually(lambda: dagster.runs(**tags), 240, "fetch_and_store_raw launching its Dagster run")[0]
    assert fetch.run_config["ops"]["ingest"]["config"]["full_refresh"] is True  # the DAG run's conf
    eventually(
        lambda: fetch.run_id in slot_holding_run_ids(dagster.instance), 120, "the fetch holding the pool"
    )
    eventually(
        lambda: airflow_stack.task(DAG_ID, run_id, "fetch_and_store_raw")["state"] == "deferred",
        60,
        "the wait",
    )

    airflow_stack.call(
        "PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/fetch_and_store_raw", {"new_state": "failed"}
    )
    eventually(
        lambda: dagster.status(fetch.run_id) == DagsterRunStatus.CANCELED, 120, "the Dagster run canceled"
    )
    SandboxControl(dagster.running.url).set_faults(latency_ms=0)

    next_run = airflow_stack.trigger(DAG_ID)
    started = time.monotonic()
    state = eventually(
        lambda: _dag_run_ended(airflow_stack, DAG_ID, next_run), 300, "the next DAG run ending"
    )
    assert state == "success", airflow_stack.log.read_text()[-4000:]
    assert time.monotonic() - started < 180
    runs = dagster.runs(**{"airflow/dag_id": DAG_ID, "airflow/run_id": next_run})
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS, DagsterRunStatus.SUCCESS]
    fetch_record = dagster.instance.get_run_record_by_id(runs[1].run_id)
    assert fetch_record is not None and fetch_record.start_time is not None
    assert fetch_record.start_time - fetch_record.create_timestamp.timestamp() < 60  # not stuck QUEUED


def _listening(root: int) -> set[tuple[str, int]]:
    """(address, port) of every socket listening in the process tree of `root`."""
    found = set()
    parent = psutil.Process(root)
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((connection.laddr.ip, connection.laddr.port))
    return found


@needs_airflow
@pytest.mark.slow
def test_nothing_make_airflow_or_buffalo_dev_starts_listens_beyond_this_machine(
    airflow_stack: AirflowStack, pg_url: str
) -> None:
    port = free_port()
    ui = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "buffalo"), "dev", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "BUFFALO_PG_URL": pg_url, "BUFFALO_SCHEDULE_ENABLED": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        eventually(
            lambda: requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok,
            180, "the Dagster UI of `buffalo dev`", every_s=1,
        )  # fmt: skip
        for name, root, expected in (
            ("make airflow", airflow_stack.process.pid, airflow_stack.api),
            ("buffalo dev", ui.pid, f"http://127.0.0.1:{port}"),
        ):
            listening = _listening(root)
            # The UI is among them (so the look is real), and everything is on loopback.
            assert ("127.0.0.1", int(expected.rsplit(":", 1)[1])) in listening, (name, listening)
            beyond = {(ip, p) for ip, p in listening if ip not in ("127.0.0.1", "::1")}
            assert beyond == set(), f"{name} listens beyond this machine on {sorted(beyond)}"
    finally:
        stop_group(ui)


# -- the compose deployment ------------------------------------------------------------------


def test_compose_runs_airflow_as_four_components_on_its_own_database_with_dagster_orchestrating() -> None:
    from tests.test_deploy import compose_services

    services = compose_services()
    components = {"api-server", "scheduler", "dag-processor", "triggerer"}
    for component in components:
        service = services[f"airflow-{component}"]
        assert service["command"][:2] == ["airflow", component]
        env = service["environment"]
        assert (
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
            == "postgresql+psycopg2://airflow:apw@postgres:5432/airflow"
        )
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW_CONN_DAGSTER_DEFAULT"] == "dagster://webserver:3000"
        assert env["BUFFALO_ORCHESTRATOR"] == "dagster"  # one scheduler of the ingest by default
        assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]
    assert "ALTER ROLE airflow" in "\n".join(services["airflow-db"]["command"])
    assert "apw" not in "\n".join(services["airflow-db"]["command"])  # the password stays in the env
    ports = [
        port
        for name, service in services.items()
        if name.startswith("airflow")
        for port in service.get("ports", [])
    ]
    # Compose v1 prints "host_ip:published:target", v2 a mapping.
    bound = [
        f"{p['host_ip']}:{p['published']}" if isinstance(p, dict) else p.rsplit(":", 1)[0] for p in ports
    ]
    assert bound == ["127.0.0.1:8080"]


# -- make airflow ------------------------------------------------------------------------------


@needs_airflow
def test_make_airflow_exits_non_zero_naming_the_component_that_could_not_start(tmp_path: Path) -> None:
    assert str(AIRFLOW_VENV) not in os.environ["PATH"]  # as on a fresh clone: airflow is not on PATH
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__TRIGGERER__TRIGGERER_LOG_SERVER_PORT": str(free_port()),
    }
    with socket.socket() as taken:  # the API server's port is already in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            ["make", "--no-print-directory", "airflow", f"AIRFLOW_HOME={tmp_path / 'home'}"],
            cwd=ROOT, env={**env, "AIRFLOW_PORT": str(port)}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "airflow: api-server exited with code" in output, output[-3000:]
    assert "FileNotFoundError" not in output
    assert f"UI on http://127.0.0.1:{port}" in output  # it binds to localhost only


# -- the connection: token and errors --------------------------------------------------------

HOOK_SCRIPT = """
import asyncio, sys
from dagster_provider import DagsterHook
hook = DagsterHook()
print("repository", hook.repository_name("buffalo_assets"))
print("status", asyncio.run(hook.arun_status(sys.argv[1])))
"""


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """`handler` served on a free loopback port (yielded) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An operations webhook on a free port: its URL (with a token in the path) and what it got."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as port:
        yield f"http://127.0.0.1:{port}/hooks/tok-{uuid.uuid4().hex}", received


@contextlib.contextmanager
def token_proxy(upstream: str, token: str) -> Iterator[str]:
    """A reverse proxy in front of Dagster that wants `Authorization: Bearer <token>`, as deployed."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Authorization") != f"Bearer {token}":
                self.send_response(401)
                self.end_headers()
                self.wfile.write(b"unauthorized")
                return
            answer = requests.post(f"{upstream}{self.path}", data=body, timeout=30,
                                   headers={"Content-Type": "application/json"})  # fmt: skip
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as port:
        yield f"127.0.0.1:{port}"


@needs_airflow
def test_the_hook_sends_the_connections_token_and_a_refused_token_fails_naming_the_connection(
    dagster: DagsterStack, tmp_path: Path
) -> None:
    token = "tok-" + uuid.uuid4().hex
    run_id = create_run_for_test(
        dagster.instance, job_name="__ASSET_JOB", status=DagsterRunStatus.CANCELED
    ).run_id
    with token_proxy(dagster.url, token) as address:

        def hook(password: str) -> subprocess.CompletedProcess[str]:
            env = airflow_env(tmp_path, f"http://:{password}@{address}")
            return subprocess.run(
                [str(AIRFLOW_VENV / "bin" / "python"), "-c", HOOK_SCRIPT, run_id],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip

        accepted = hook(token)
        refused = hook("wrong-" + token)
        # A token pasted from a secrets file with its newline is the token; a control character
        # inside it is refused without quoting it.
        pasted = hook(urllib.parse.quote(token + "\n"))
        mangled = hook(urllib.parse.quote(token[:6] + "\x01" + token[6:]))
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    assert mangled.returncode != 0
    assert "the API token in the password field contains a control character" in mangled.stderr
    assert token[6:] not in mangled.stdout + mangled.stderr
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "repository __repository__" in accepted.stdout  # asked from the workspace, not assumed
    assert "status CANCELED" in accepted.stdout  # the triggerer's async path, same token
    assert refused.returncode != 0
    assert f"Dagster at http://{address} (connection 'dagster_default') refused the request (HTTP 401)" in (
        refused.stderr
    ), refused.stderr[-3000:]
    assert token not in refused.stdout + refused.stderr + accepted.stdout + accepted.stderr


# -- the provider package -------------------------------------------------------------------

PROVIDER = ROOT / "airflow" / "provider"


def _provider_version() -> str:
    import tomllib

    return tomllib.loads((PROVIDER / "pyproject.toml").read_text())["project"]["version"]


INSTALLED_SCRIPT = """
import importlib.metadata as m, json
d = m.distribution("airflow-provider-buffalo-dagster")
files = {str(f): f.locate().read_text() for f in d.files if str(f).startswith("dagster_provider/")
         and str(f).endswith(".py")}
print(json.dumps({"version": d.version, "direct_url": json.loads(d.read_text("direct_url.json")),
                  "files": files}))
"""


@needs_airflow
@needs_airflow2
@pytest.mark.parametrize("venv", [AIRFLOW_VENV, AIRFLOW2_VENV], ids=["airflow3", "airflow2.11"])
def test_the_provider_is_pip_installed_and_airflow_offers_the_dagster_connection_type_link_and_test(
    venv: Path, dagster: DagsterStack, tmp_path: Path
) -> None:
    env = {**airflow_env(tmp_path, dagster.url, venv), "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    # Installed by pip from airflow/provider (not a plugins folder, not a path hack), and what is
    # installed is this checkout's code.
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", INSTALLED_SCRIPT], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    installed = json.loads(done.stdout)
    assert installed["version"] == _provider_version()
    assert installed["direct_url"]["url"] == PROVIDER.resolve().as_uri()
    source = {
        f"dagster_provider/{p.name}": p.read_text() for p in (PROVIDER / "dagster_provider").glob("*.py")
    }
    assert installed["files"] == source, "the virtualenv's provider is stale: run make airflow-venv"

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "airflow"), *args], env={**env, **extra}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    def listed(*args: str) -> list[dict[str, Any]]:
        out = cli("providers", *args, "--output", "json")
        assert out.returncode == 0, out.stderr[-3000:]
        # Airflow may log before the JSON (its last line)
        return json.loads([line for line in out.stdout.splitlines() if line.startswith("[")][-1])

    packages = {row["package_name"]: row for row in listed("list")}
    assert packages["airflow-provider-buffalo-dagster"]["version"] == _provider_version()
    hooks = {row["connection_type"]: row for row in listed("hooks")}
    assert hooks["dagster"]["class"] == "dagster_provider.hooks.DagsterHook"
    assert "dagster_provider.operators.DagsterRunLink" in {
        row["extra_link_class_name"] for row in listed("links")
    }
    fields = {row["connection_parameter_name"] for row in listed("widgets")}
    for field in ("location", "repository", "ca_bundle", "verify", "timeout"):
        assert f"extra__dagster__{field}" in fields
    assert "dagster" in {row["field_behaviours"] for row in listed("behaviours")}

    # The Test button's check, from the CLI: the default connection reaches Dagster and finds
    # the code location; a connection of type dagster naming another location fails, saying so.
    # (as compose sets it: a URI of type dagster; http://... has no Test, being of type http)
    as_typed = dagster.url.replace("http://", "dagster://")
    ok = cli("connections", "test", "dagster_default", AIRFLOW_CONN_DAGSTER_DEFAULT=as_typed)
    assert "Connection success!" in ok.stdout, (ok.stdout + ok.stderr)[-3000:]
    elsewhere = json.dumps({"conn_type": "dagster", "host": dagster.url, "extra": {"location": "nowhere"}})
    bad = cli("connections", "test", "dagster_elsewhere", AIRFLOW_CONN_DAGSTER_ELSEWHERE=elsewhere)
    assert "Connection failed!" in bad.stdout, (bad.stdout + bad.stderr)[-3000:]
    assert "Dagster has no code location 'nowhere'" in bad.stdout
    # Dagster is always asked, even when the connection names its repository.
    for extra, said in (
        ({}, "could not reach Dagster at http://127.0.0.1:1"),
        ({"repository": "__repository__"}, "could not reach Dagster at http://127.0.0.1:1"),
    ):
        down = json.dumps({"conn_type": "dagster", "host": "http://127.0.0.1:1", "extra": extra})
        unreachable = cli("connections", "test", "dagster_down", AIRFLOW_CONN_DAGSTER_DOWN=down)
        assert "Connection failed!" in unreachable.stdout and said in unreachable.stdout, unreachable.stdout
    other = json.dumps({"conn_type": "dagster", "host": dagster.url, "extra": {"repository": "nope"}})
    wrong = cli("connections", "test", "dagster_other", AIRFLOW_CONN_DAGSTER_OTHER=other)
    assert "Dagster code location 'buffalo_assets' has no repository 'nope'" in wrong.stdout, wrong.stdout


FOLLOW_SCRIPT = """
import asyncio, json, sys
from dagster_provider import DagsterAssetRunOperator, DagsterHook, DagsterRunTrigger
run_id, retry_wait, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if path == "trigger":
    async def first():
        trigger = DagsterRunTrigger(run_id, "dagster_default", poll_interval=0.5, retry_wait=retry_wait)
        async for event in trigger.run():
            return event.payload
    print(json.dumps(asyncio.run(first())))
elif path == "worker":
    operator = DagsterAssetRunOperator(
        task_id="t", asset_selection=["raw_orders"], poll_interval=0.5, retry_wait=retry_wait)
    ended, status, message = operator._wait(DagsterHook(), run_id)
    print(json.dumps({"run_id": ended, "status": status, "message": message}))
elif path == "stop-trigger":  # what a killed deferred task terminates
    print(json.dumps({"run_id": asyncio.run(DagsterHook().arun_to_stop(run_id, wait_s=retry_wait))}))
elif path == "stop-worker":  # what a killed task in a worker terminates
    print(json.dumps({"run_id": DagsterHook().run_to_stop(run_id, wait_s=retry_wait)}))
elif path == "reattach":  # what a new try of the task instance tagged run_id waits for
    operator = DagsterAssetRunOperator(task_id=run_id, asset_selection=["raw_orders"])
    identity = {"airflow/dag_id": "d", "airflow/run_id": "r", "airflow/task_id": run_id}
    earlier = operator._earlier_run(DagsterHook(), identity)
    print(json.dumps({"run_id": earlier and earlier["runId"]}))
"""


@needs_airflow
@pytest.mark.parametrize("path", ["trigger", "worker"])
def test_a_run_dagster_retries_is_followed_to_its_retry_and_a_final_failure_is_not(
    path: str, dagster: DagsterStack, tmp_path: Path
) -> None:
    """Dagster's run retries tag a failed run `dagster/will_retry` and, once the daemon
    launched the retry, `dagster/auto_retry_run_id`: the wait follows the chain (deferred in
    the triggerer or in a worker) and ends with the retry's result."""
    instance = dagster.instance

    def run(status: DagsterRunStatus, **tags: str) -> str:
        return create_run_for_test(instance, job_name="__ASSET_JOB", status=status, tags=tags).run_id

    def follow(run_id: str, retry_wait: float = 60, mode: str = path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(AIRFLOW_VENV / "bin" / "python"), "-c", FOLLOW_SCRIPT, run_id, str(retry_wait), mode],
            env=airflow_env(tmp_path, dagster.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ended(process: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    failed = run(DagsterRunStatus.FAILURE, **{"dagster/will_retry": "true"})
    retry = run(DagsterRunStatus.SUCCESS, **{"dagster/parent_run_id": failed, "dagster/root_run_id": failed})
    waiting = follow(failed)
    time.sleep(3)  # the daemon launches the retry a moment after the failure
    assert waiting.poll() is None, "the wait ended before Dagster launched the announced retry"
    instance.add_run_tags(failed, {"dagster/auto_retry_run_id": retry})
    assert ended(waiting) == {"run_id": retry, "status": "SUCCESS", "message": ""}

    final = run(DagsterRunStatus.FAILURE, **{"dagster/will_retry": "false"})
    assert ended(follow(final)) == {"run_id": final, "status": "FAILURE", "message": ""}
    untagged = run(DagsterRunStatus.FAILURE)  # run retries off: no tag at all
    assert ended(follow(untagged)) == {"run_id": untagged, "status": "FAILURE", "message": ""}

    never = run(DagsterRunStatus.FAILURE, **{"dagster/will_retry": "true"})
    stranded = ended(follow(never, retry_wait=2))
    assert (stranded["run_id"], stranded["status"]) == (never, "FAILURE")
    assert "launched no retry within 2 s" in stranded["message"]

    # Killing the task while Dagster is about to retry stops the retry, not the failed run.
    stop = f"stop-{path}"
    pending = run(DagsterRunStatus.FAILURE, **{"dagster/will_retry": "true"})
    going = run(DagsterRunStatus.STARTED, **{"dagster/parent_run_id": pending})
    stopping = follow(pending, retry_wait=30, mode=stop)
    time.sleep(2)
    assert stopping.poll() is None, "the kill gave up before Dagster launched the announced retry"
    instance.add_run_tags(pending, {"dagster/auto_retry_run_id": going})
    assert ended(stopping) == {"run_id": going}
    assert ended(follow(going, mode=stop)) == {"run_id": going}  # a run still going is itself stopped
    assert ended(follow(final, mode=stop)) == {"run_id": None}  # an ended chain: nothing to stop

    # A new try of the task reattaches to its failed run while Dagster retries it (no second
    # run beside Dagster's retry), and launches anew after a final failure.
    for will_retry, expected in (("true", True), ("false", False)):
        task = f"t-{path}-{will_retry}"
        tags = {"airflow/dag_id": "d", "airflow/run_id": "r", "airflow/task_id": task}
        tried = run(DagsterRunStatus.FAILURE, **tags, **{"dagster/will_retry": will_retry})
        assert ended(follow(task, mode="reattach")) == {"run_id": tried if expected else None}
