"""Dagster's project CLI, `dg`, on the checkout as a Dagster user runs it: `[tool.dg]` in
pyproject.toml and the root dagster.yaml, from the project folder, DAGSTER_HOME unset."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy as sa

from buffalo_assets.sandbox.server import free_port
from buffalo_assets.storage.embedded import EmbeddedPostgres
from tests.conftest import SandboxFactory
from tests.pipeline import stop_group

ROOT = Path(__file__).resolve().parents[1]
DG = str(ROOT / ".venv" / "bin" / "dg")


def user_env(**extra: str) -> dict[str, str]:
    """A shell with none of the platform's or Dagster's settings (the tests' own included)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BUFFALO_", "DAGSTER_"))}
    return {**keep, **extra}


def dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DG, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_and_list_defs_load_the_project_with_nothing_set(tmp_path: Path) -> None:
    env = user_env(BUFFALO_HOME=str(tmp_path))
    try:
        check_and_list(env)
    finally:  # dg's temporary instance started the embedded server its storage lives in
        EmbeddedPostgres(tmp_path / ".buffalo" / "postgres").stop()


def check_and_list(env: dict[str, str]) -> None:
    checked = dg("check", "defs", env=env)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = dg("list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {"order_ids", "raw_orders", "clean_orders", "delay_model", "order_delay_risk"} <= assets
    assert "delay_model_gate" in {check["name"] for check in defs["asset_checks"]}


def test_dg_launch_ingests_the_sandbox_into_the_database_and_records_the_run_there(
    pg_url: str, start_sandbox: SandboxFactory, empty_store: sa.Engine, tmp_path: Path
) -> None:
    sandbox = start_sandbox(orders=30)
    env = user_env(
        BUFFALO_HOME=str(tmp_path),
        BUFFALO_PG_URL=pg_url,
        BUFFALO_BASE_URL=sandbox.url,
        BUFFALO_USERNAME=sandbox.sandbox.config.username,
        BUFFALO_PASSWORD=sandbox.sandbox.config.password,
    )
    with empty_store.connect() as connection:
        has_runs = connection.execute(sa.text("SELECT to_regclass('runs') IS NOT NULL")).scalar_one()
        runs_before = connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() if has_runs else 0
    temporary_before = set(ROOT.glob(".tmp_dagster_home_*"))
    launched = dg("launch", "--assets", "order_ids,raw_orders", env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    with empty_store.connect() as connection:
        stored = connection.execute(sa.text("SELECT count(DISTINCT order_id) FROM raw.order_versions"))
        runs = connection.execute(sa.text("SELECT status FROM runs ORDER BY create_timestamp DESC LIMIT 1"))
        runs_after = connection.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
        stored_ids, last_run = stored.scalar_one(), runs.scalars().all()
    assert stored_ids == 30
    # The run is in the platform's database (the root dagster.yaml), not a throw-away SQLite.
    assert (runs_after - runs_before, last_run) == (1, ["SUCCESS"])
    assert sandbox.sandbox.config.password not in launched.stdout + launched.stderr
    assert set(ROOT.glob(".tmp_dagster_home_*")) == temporary_before  # dg removed its temporary folder


@contextmanager
def serving(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        stop_group(process)


def test_dg_dev_with_nothing_set_starts_the_embedded_server_and_serves_the_project(tmp_path: Path) -> None:
    port = free_port()
    embedded = EmbeddedPostgres(tmp_path / ".buffalo" / "postgres")
    try:
        with serving([DG, "dev", "-p", str(port)], user_env(BUFFALO_HOME=str(tmp_path))) as process:
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                try:
                    if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "dg dev did not serve the UI within 3 minutes"
                time.sleep(1)
            answer = requests.post(
                f"http://127.0.0.1:{port}/graphql",
                json={"query": "{ assetNodes { assetKey { path } } }"},
                timeout=30,
            ).json()
            served = {node["assetKey"]["path"][0] for node in answer["data"]["assetNodes"]}
            assert {"order_ids", "raw_orders", "clean_orders", "order_delay_risk"} <= served
            # Its runs and events are kept in the embedded server it started under BUFFALO_HOME.
            assert embedded.is_running()
            with sa.create_engine(embedded.url()).connect() as connection:
                tables = set(sa.inspect(connection).get_table_names())
            assert {"runs", "event_logs"} <= tables
    finally:
        embedded.stop()
