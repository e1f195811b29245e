"""Airflow keeps its contract: real Airflow runs DAG `buffalo_orders` against a real Dagster.

Airflow lives in its own virtualenv (`airflow/.venv`, made by `make airflow-venv`, which
`make test` runs first). Dagster runs as `dagster dev` (webserver + daemon) on a free
port, on the session database, with the sandbox as its Buffalo API.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.server import RunningSandbox, free_port
from tests.conftest import ROOT, SandboxFactory
from tests.pipeline import stop_group

AIRFLOW_VENV = ROOT / "airflow" / ".venv"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
DAGSTER = ROOT / ".venv" / "bin" / "dagster"

pytestmark = pytest.mark.skipif(
    not AIRFLOW.exists() and os.environ.get("CI") != "true",
    reason="Airflow's virtualenv is missing: run `make airflow-venv` (make test does)",
)


def wait_for(url: str, query: str, deadline_s: float, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "dagster dev exited early"
        try:
            body = requests.post(f"{url}/graphql", json={"query": query}, timeout=5).json()
            nodes = body.get("data", {}).get("assetNodes") or []
            if any(node["assetKey"]["path"] == ["raw_orders"] for node in nodes):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"Dagster did not serve the buffalo_assets location at {url}")


@pytest.fixture
def dagster_webserver(
    start_sandbox: SandboxFactory, pg_url: str, dagster_home: Path, tmp_path: Path
) -> Iterator[tuple[str, RunningSandbox]]:
    running = start_sandbox(orders=60)
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
    }
    log = (tmp_path / "dagster-dev.log").open("w")
    process = subprocess.Popen(
        [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, "{ assetNodes { assetKey { path } } }", 180, process)
        yield url, running
    finally:
        stop_group(process)
        log.close()


def airflow(
    args: list[str], airflow_home: Path, dagster_url: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{AIRFLOW_VENV / 'bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(airflow_home)),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "DAGSTER_URL": dagster_url,
        **extra,
    }
    return subprocess.run([str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=900)


def tagged_runs(instance: DagsterInstance, excluding: set[str] = frozenset()) -> list:
    """Dagster runs tagged by the DAG, oldest first, except those in `excluding`."""
    runs = instance.get_runs(filters=RunsFilter(tags={"airflow/dag_id": "buffalo_orders"}))
    return [run for run in reversed(runs) if run.run_id not in excluding]


def test_the_dag_materializes_both_assets_in_dagster_and_fails_with_dagsters_error(
    dagster_webserver: tuple[str, RunningSandbox],
    instance: DagsterInstance,
    empty_store: sa.Engine,
    tmp_path: Path,
) -> None:
    dagster_url, running = dagster_webserver
    home = tmp_path / "airflow_home"
    home.mkdir()
    migrated = airflow(["db", "migrate"], home, dagster_url)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    errors = airflow(["dags", "list-import-errors"], home, dagster_url)
    assert errors.returncode == 0, errors.stderr[-3000:]
    assert "buffalo_orders" not in errors.stdout and "Error" not in errors.stdout, errors.stdout

    ok = airflow(["dags", "test", "buffalo_orders", "2026-11-29"], home, dagster_url)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-5000:]
    runs = tagged_runs(instance)
    assert [run.tags["airflow/task_id"] for run in runs] == ["get_order_ids", "fetch_and_store_raw"]
    assert len({run.tags["airflow/run_id"] for run in runs}) == 1
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs)
    assert {tuple(sorted(k.to_user_string() for k in run.asset_selection or ())) for run in runs} == {
        ("order_ids",),
        ("raw_orders",),
    }
    with empty_store.connect() as connection:
        stored = set(
            connection.execute(sa.text("SELECT DISTINCT order_id FROM raw.order_versions")).scalars()
        )
    assert stored == {row["order_id"] for row in SandboxControl(running.url).truth()}
    assert f"{dagster_url}/runs/" in ok.stdout + ok.stderr  # the task log links to the Dagster run

    SandboxControl(running.url).set_faults(reject_logins=True)
    failed = airflow(
        ["dags", "test", "buffalo_orders", "2026-11-30"], home, dagster_url, BUFFALO_AIRFLOW_RETRIES="0"
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 or "failed" in output.lower()
    assert "Buffalo login failed" in output and "Incorrect username or password" in output, output[-5000:]
    assert "ended FAILURE: order_ids:" in output  # the failing step, then Dagster's own error
    assert running.sandbox.config.password not in output + ok.stdout + ok.stderr  # no secret in task logs
    assert not any(secret in output for secret in running.sandbox.secrets_seen)
    runs = tagged_runs(instance, excluding={run.run_id for run in runs})
    assert [run.tags["airflow/task_id"] for run in runs] == ["get_order_ids"]  # the next task never ran
    assert runs[0].status == DagsterRunStatus.FAILURE
