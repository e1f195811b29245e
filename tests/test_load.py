"""Load: a 100,000-order account with 10% faults and 30% varied orders ingests to completion.

Marked slow (several minutes); `make test`, and so CI, runs it. Its figures
(time, orders/s, peak RSS of this process) are printed and written to bench/results/.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa
from dagster import DagsterInstance

from buffalo_assets.sandbox.server import free_port
from buffalo_assets.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME
from tests.conftest import ROOT
from tests.pipeline import ApiTarget, metadata_of, run

ORDERS = int(os.environ.get("BUFFALO_LOAD_ORDERS", "100000"))


@pytest.fixture
def big_sandbox() -> Iterator[ApiTarget]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "buffalo_assets.cli", "sandbox", "--port", str(port), "--orders", str(ORDERS),
         "--faults", "0.1", "--retry-after", "0.05", "--slow-ms", "1200", "--latency-ms", "5",
         "--variations", "0.3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/_sandbox/status", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
    yield ApiTarget(url, SANDBOX_USERNAME, SANDBOX_PASSWORD)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_100000_order_account_with_10_percent_faults_ingests_completely(
    big_sandbox: ApiTarget, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    started = time.perf_counter()
    client = {"concurrency": 16, "read_timeout": 1.0, "backoff_base": 0.1}
    first = run(big_sandbox, pg_url, instance, **client)
    assert first.success
    raw = metadata_of(first, "raw_orders")
    second = run(big_sandbox, pg_url, instance, **client)
    assert second.success
    elapsed = time.perf_counter() - started
    with empty_store.connect() as connection:
        stored, distinct = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT order_id) FROM raw.order_versions")
        ).one()
    truth = requests.get(f"{big_sandbox.url}/_sandbox/status", timeout=30).json()["orders"]
    assert distinct == truth == ORDERS
    assert stored == distinct  # the clock did not move: one version per order
    figures = {
        "orders": ORDERS,
        "first_run_s": raw["elapsed_s"],
        "first_run_orders_per_s": raw["orders_per_s"],
        "first_run_failed_then_retried": raw["failed"],
        "first_run_retries": raw["retries"],
        "both_runs_s": round(elapsed, 1),
        "peak_rss_mb_test_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    target = ROOT / "bench" / "results" / "load-test.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2))
