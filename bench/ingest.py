"""Ingestion benchmark: the original sequential approach against ours, side by side in one run.

    python -m bench.ingest --orders 2000 --latency-ms 50 --concurrency 16
    python -m bench.ingest --orders 10000 --history-days 210 --skip-baseline
    python -m bench.ingest --orders 100000 --skip-baseline

Measures, against one sandbox served by a separate process (so it does not compete for
this process's GIL) with the given latency:
  (a) baseline: what the original pipeline did: list every page, then per order check
      whether it is stored, fetch it, insert it and commit, one at a time;
  (b) our full first ingest (order_ids + raw_orders through Dagster, real IO manager);
  (c) our refresh with nothing changed;
  (d) our refresh after advancing the sandbox clock by a day.
Prints a table and writes JSON (times, ratios, peak RSS, CPU per order) to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import requests

from bench import write_results
from buffalo_assets.buffalo.client import PAGE_SIZE, encrypt_password
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.orders import TERMINAL_STAGES
from buffalo_assets.sandbox.server import free_port
from buffalo_assets.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME
from buffalo_assets.storage.database import database_url, recreate_database, safe_url


def start_sandbox(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "buffalo_assets.cli", "sandbox", "--port", str(port),
        "--orders", str(args.orders), "--latency-ms", str(args.latency_ms),
        "--history-days", str(args.history_days), "--seed", str(args.seed),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/_sandbox/status", timeout=1)
            return process, url
        except requests.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the sandbox did not start") from None
            time.sleep(0.2)


def baseline(url: str, pg_url: str) -> dict[str, Any]:
    """The original pipeline: sequential listing, then check/fetch/insert/commit per order."""
    dsn = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    connection = psycopg2.connect(dsn)
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS baseline")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS baseline.orders (order_id text PRIMARY KEY, payload jsonb)"
        )
    connection.commit()
    started, cpu = time.perf_counter(), time.process_time()
    session = requests.Session()
    key = session.get(f"{url}/buffalo/getRsaPublicKey", timeout=30).text
    ticket = session.post(
        f"{url}/buffalo/login",
        data=json.dumps({"username": SANDBOX_USERNAME, "password": encrypt_password(SANDBOX_PASSWORD, key)}),
        headers={"Content-Type": "application/json;charset=UTF-8"},
        timeout=30,
    ).json()["data"]["ticket"]
    session.headers.update({"Authorization": ticket, "Buffalo-Ticket": ticket})
    ids: list[str] = []
    page = 1
    while True:
        body = session.get(
            f"{url}/mobileapi/myorder/orderList",
            params={"condition": "", "status": 0, "pageNum": page, "language": "en", "tableIndex": 0},
            timeout=30,
        ).json()
        items = body["data"]["resultMap"]["list"]
        if not items:
            break
        ids.extend(str(item["id"]) for item in items)
        page += 1
    stored = 0
    for order_id in ids:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM baseline.orders WHERE order_id = %s", (order_id,))
            if cursor.fetchone():
                continue
            detail = session.get(
                f"{url}/mobileapi/myorder/detail/{order_id}",
                params={"language": "en"},
                headers={"Referer": f"https://index.buffaloex.com/client/orders/order-detail?id={order_id}"},
                timeout=30,
            )
            cursor.execute(
                "INSERT INTO baseline.orders VALUES (%s, %s)", (order_id, json.dumps(detail.json()))
            )
        connection.commit()
        stored += 1
    elapsed = time.perf_counter() - started
    connection.close()
    return {
        "seconds": elapsed,
        "orders": stored,
        "pages": page,
        "cpu_ms_per_order": 1000 * (time.process_time() - cpu) / max(stored, 1),
    }


def ours(url: str, pg_url: str, concurrency: int, label: str) -> dict[str, Any]:
    from dagster import DagsterInstance, materialize

    from buffalo_assets.assets.ingestion import ingest
    from buffalo_assets.buffalo.resource import BuffaloResource
    from buffalo_assets.storage.io_manager import PostgresIOManager
    from buffalo_assets.storage.resource import PostgresResource

    resources = {
        "buffalo": BuffaloResource(
            base_url=url, username=SANDBOX_USERNAME, password=SANDBOX_PASSWORD, concurrency=concurrency
        ),
        "postgres": PostgresResource(url=pg_url),
        "postgres_io": PostgresIOManager(url=pg_url),
    }
    started, cpu = time.perf_counter(), time.process_time()
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [ingest],
            resources=resources,
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    elapsed = time.perf_counter() - started
    metadata = {
        event.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    raw = metadata["raw_orders"]
    return {
        "label": label,
        "seconds": elapsed,
        "listed_pages": metadata["order_ids"]["pages"],
        "fetched": raw["fetched"],
        "new_versions": raw["new_versions"],
        "failed": raw["failed"],
        "requests": raw["requests"],  # the ingest step's, list pages included
        "cpu_ms_per_fetched_order": 1000 * (time.process_time() - cpu) / max(raw["fetched"], 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--history-days", type=float, default=60.0, help="210 gives ~90%% delivered")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-baseline", action="store_true", help="(a) takes orders x latency seconds")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)

    server_url = database_url()
    pg_url = recreate_database(server_url, "buffalo_bench")
    os.environ["BUFFALO_PG_URL"] = pg_url
    sandbox, url = start_sandbox(args)
    print(f"sandbox {url}: {args.orders} orders, {args.latency_ms:g} ms latency; database {safe_url(pg_url)}")
    try:
        truth = SandboxControl(url).truth()
        terminal_share = sum(row["stage"] in TERMINAL_STAGES for row in truth) / len(truth)
        phases: list[dict[str, Any]] = []
        if not args.skip_baseline:
            base = baseline(url, pg_url)
            phases.append({"label": "(a) baseline: sequential original", **base})
            print(f"(a) baseline          {base['seconds']:8.2f} s")
        for label in ("(b) ours: full first ingest", "(c) ours: refresh, no change"):
            phases.append(ours(url, pg_url, args.concurrency, label))
            print(f"{label:30} {phases[-1]['seconds']:8.2f} s")
        SandboxControl(url).advance(days=1)
        phases.append(ours(url, pg_url, args.concurrency, "(d) ours: refresh after +1 day"))
        print(f"{phases[-1]['label']:30} {phases[-1]['seconds']:8.2f} s")
    finally:
        os.killpg(sandbox.pid, signal.SIGTERM)
        sandbox.wait(timeout=10)

    by_label = {phase["label"][:3]: phase for phase in phases}
    full = by_label["(b)"]["seconds"]
    ratios: dict[str, float] = {
        "refresh_no_change_over_full": by_label["(c)"]["seconds"] / full,
        "refresh_after_day_over_full": by_label["(d)"]["seconds"] / full,
    }
    if "(a)" in by_label:
        ratios["baseline_over_full"] = by_label["(a)"]["seconds"] / full
    report = {
        "when": datetime.now(UTC).isoformat(),
        "orders": args.orders,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "history_days": args.history_days,
        "terminal_share_at_start": round(terminal_share, 3),
        "page_size": PAGE_SIZE,
        "phases": phases,
        "ratios": ratios,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_count": os.cpu_count(),
    }
    print()
    print(f"{'phase':34} {'seconds':>9} {'fetched':>8} {'cpu ms/order':>13} {'rss MB':>8}")
    for phase in phases:
        print(
            f"{phase['label']:34} {phase['seconds']:9.2f} {phase.get('fetched', phase.get('orders', 0)):8d} "
            f"{phase.get('cpu_ms_per_fetched_order', phase.get('cpu_ms_per_order', 0)):13.3f} "
            f"{phase.get('peak_rss_mb', 0):8.1f}"
        )
    for name, value in ratios.items():
        print(f"{name:34} {value:9.3f}")
    print(
        f"terminal share at start: {report['terminal_share_at_start']}; "
        f"peak RSS {report['peak_rss_mb']:.0f} MB"
    )
    write_results(report, args.json, f"ingest-{args.orders}")
    return report


if __name__ == "__main__":
    main()
