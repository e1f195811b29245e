"""The deployment's topology, run natively: code server, webserver and daemon on Postgres.

No container engine runs here, so the processes docker-compose.yml would start run as
plain processes with the same commands. The daemon's schedule launches an ingest (cron
shortened to every minute), declarative automation then brings `core` up to date, and a
real Chromium checks what an analyst sees in the UI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from buffalo_assets.sandbox.server import RunningSandbox, free_port
from tests.conftest import ROOT
from tests.pipeline import stop_group

BIN = ROOT / ".venv" / "bin"
# The documentation's images are refreshed only on request (`make screenshots`); otherwise the
# screenshots go to the test's temporary folder and no tracked file changes.
SCREENSHOTS_VARIABLE = "BUFFALO_SCREENSHOTS_DIR"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, as root, with no calls home (this machine's network is closed).
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


@dataclass
class Stack:
    url: str
    sandbox: RunningSandbox
    home: Path


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("w")
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def dismiss_welcome_dialog(page) -> None:  # noqa: ANN001
    """Dagster asks first-time visitors to join its community; skip it, if it shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_role("button", name="Skip").first.click(timeout=8_000)
    except PlaywrightTimeout:
        return
    page.get_by_role("button", name="Skip").first.wait_for(state="hidden", timeout=8_000)


def wait_until(condition, timeout: float, what: str, interval: float = 1.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (requests.RequestException, ValueError, KeyError, TypeError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(pg_url: str, dagster_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from buffalo_assets.sandbox.app import SandboxConfig
    from buffalo_assets.sandbox.server import running_sandbox

    logs = tmp_path_factory.mktemp("stack")
    engine = sa.create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "TRUNCATE raw.order_ids, raw.order_versions, ops.fetch_errors, ops.list_walks, "
                "core.clean_orders, core.order_items, core.order_events, ops.transform_errors"
            )
        )
    engine.dispose()
    with running_sandbox(SandboxConfig(orders=60)) as running:
        code_port, web_port = free_port(), free_port()
        workspace = logs / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {code_port}\n      location_name: buffalo_assets\n"
        )
        env = {
            **os.environ,
            "BUFFALO_PG_URL": pg_url,
            "DAGSTER_HOME": str(dagster_home),
            "BUFFALO_BASE_URL": running.url,
            "BUFFALO_USERNAME": running.sandbox.config.username,
            "BUFFALO_PASSWORD": running.sandbox.config.password,
            "BUFFALO_INGEST_CRON": "* * * * *",
            "BUFFALO_SCHEDULE_ENABLED": "true",
        }
        code = start(
            [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port),
             "-m", "buffalo_assets.definitions", "--location-name", "buffalo_assets"],
            env, logs / "code-server.log",
        )  # fmt: skip
        processes = [code]
        try:
            wait_until(
                lambda: subprocess.run(
                    [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(code_port)],
                    capture_output=True, timeout=30,
                ).returncode == 0,
                120, "the code server",
            )  # fmt: skip
            processes.append(
                start(
                    [
                        str(BIN / "dagster-webserver"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(web_port),
                        "-w",
                        str(workspace),
                    ],
                    env,
                    logs / "webserver.log",
                )  # fmt: skip
            )
            processes.append(
                start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs / "daemon.log")
            )
            url = f"http://127.0.0.1:{web_port}"
            wait_until(lambda: requests.get(f"{url}/server_info", timeout=5).ok, 120, "the webserver")
            yield Stack(url, running, logs)
        finally:
            for process in reversed(processes):
                stop_group(process)


def test_the_daemon_runs_the_schedule_and_automation_brings_core_up_to_date(
    stack: Stack, instance: DagsterInstance, engine: sa.Engine
) -> None:
    def scheduled_success() -> bool:
        runs = instance.get_runs(filters=RunsFilter(tags={"dagster/schedule_name": "ingest_orders_schedule"}))
        return any(run.status == DagsterRunStatus.SUCCESS for run in runs)

    wait_until(scheduled_success, 240, "a scheduled ingest run to succeed", interval=2)

    def core_complete() -> bool:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM core.clean_orders")).scalar_one() == 60

    wait_until(core_complete, 240, "automation to materialize the core tables", interval=2)
    automated = [
        run
        for run in instance.get_runs()
        if run.tags.get("dagster/from_automation_condition") == "true"
        or "dagster/automation_condition_evaluation_id" in run.tags
        or run.tags.get("dagster/sensor_name") == "core_automation"
    ]
    assert automated, "the core tables were not materialized by the automation sensor"
    from dagster import AssetCheckKey, AssetKey

    def checks_ran() -> bool:
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey("clean_orders"), "delivered_at_iff_delivered"), limit=1
        )
        return bool(history) and history[0].status.value == "SUCCEEDED"

    wait_until(checks_ran, 120, "the core checks to run with the automated materialization", interval=2)


@pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true", reason="Debian's chromium is not installed"
)
def test_an_analyst_sees_the_lineage_and_the_raw_orders_metadata_in_a_real_browser(
    stack: Stack, engine: sa.Engine, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    screenshots = Path(os.environ.get(SCREENSHOTS_VARIABLE) or tmp_path)

    with engine.connect() as connection:  # the previous test (or this wait) leaves data behind
        wait_until(
            lambda: connection.execute(sa.text("SELECT count(*) FROM raw.order_versions")).scalar_one() > 0,
            240, "an ingest",
        )  # fmt: skip
    screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{stack.url}/assets/raw_orders?view=lineage", wait_until="networkidle")
        for name in ("order_ids", "raw_orders", "clean_orders", "order_items", "order_events"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        dismiss_welcome_dialog(page)
        page.wait_for_timeout(1_000)
        page.screenshot(path=str(screenshots / "lineage.png"))
        page.goto(f"{stack.url}/assets/raw_orders", wait_until="networkidle")
        page.get_by_text("Row count").first.wait_for(timeout=60_000)
        page.get_by_text("payload_sha256").first.wait_for(timeout=60_000)  # the column schema
        body = page.inner_text("body")
        assert "Latest materialization" in body
        assert "last_fetched_at" in body and "jsonb" in body
        page.screenshot(path=str(screenshots / "raw_orders.png"), full_page=True)
        browser.close()
    assert (screenshots / "lineage.png").stat().st_size > 10_000
