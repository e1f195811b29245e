"""Transform benchmark: full transform of N orders, then an incremental one of K changed orders.

    python -m bench.transform --orders 100000 --changed 1000

The raw store is filled with the sandbox's own order details (the payloads the sandbox
would serve, generated in-process and COPYed into raw.order_versions), so the benchmark
measures the transform and not the API. Both transforms run through Dagster with the
real resources. Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import write_results
from buffalo_assets.sandbox.orders import DAY, OrderBook
from buffalo_assets.storage.database import database_url, recreate_database, safe_url
from buffalo_assets.storage.raw_store import canonical_json, payload_sha256
from buffalo_assets.storage.resource import engine_for


def load_raw(
    pg_url: str, book: OrderBook, indexes: range | list[int], at: float, fetched_at: datetime
) -> int:
    """COPY the details of `indexes` as seen at sandbox time `at` into raw.order_versions."""
    stamp = fetched_at.isoformat()
    raw = engine_for(pg_url).raw_connection()
    try:
        for start in range(0, len(indexes), 5_000):
            buffer = io.StringIO()
            for index in indexes[start : start + 5_000]:
                text = canonical_json(book.detail(index, at))
                escaped = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                buffer.write(
                    f"{book.order_id(index)}\t{escaped}\t{payload_sha256(text)}\t{stamp}\t{stamp}\tbench\n"
                )
            buffer.seek(0)
            with raw.cursor() as cursor:
                cursor.copy_expert(
                    "COPY raw.order_versions (order_id, payload, payload_sha256, first_fetched_at, "
                    "last_fetched_at, run_id) FROM STDIN",
                    buffer,
                )
            raw.commit()
    finally:
        raw.close()
    book._plan.cache_clear()  # the generator's cache is not the transform's memory
    return len(indexes)


def transform(pg_url: str) -> dict[str, Any]:
    from dagster import DagsterInstance, materialize

    from buffalo_assets.assets.transform import transform_orders
    from buffalo_assets.storage.io_manager import PostgresIOManager
    from buffalo_assets.storage.resource import PostgresResource

    started = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [transform_orders],
            resources={
                "postgres": PostgresResource(url=pg_url),
                "postgres_io": PostgresIOManager(url=pg_url),
            },
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    elapsed = time.perf_counter() - started
    clean = next(
        {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "clean_orders"
    )
    return {
        "seconds": elapsed,
        "orders_transformed": clean["orders_transformed"],
        "transform_errors": clean["transform_errors"],
        "cpu_ms_per_order": clean["cpu_ms_per_order"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    pg_url = recreate_database(database_url(), "buffalo_bench_transform")
    os.environ["BUFFALO_PG_URL"] = pg_url
    now = time.time() - DAY
    book = OrderBook(seed=args.seed, count=args.orders, start=now)
    started = time.perf_counter()
    load_raw(pg_url, book, range(args.orders), now, datetime.fromtimestamp(now, UTC))
    print(f"{args.orders} raw orders loaded into {safe_url(pg_url)} in {time.perf_counter() - started:.1f}s")

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    full = transform(pg_url)
    print(f"full transform        {full['seconds']:8.2f} s  ({full['orders_transformed']} orders)")

    later = now + DAY
    changed = [i for i in range(args.orders - 1, -1, -1) if book.detail(i, later) != book.detail(i, now)]
    changed = changed[: args.changed]
    load_raw(pg_url, book, changed, later, datetime.now(UTC))
    incremental = transform(pg_url)
    print(
        f"incremental transform {incremental['seconds']:8.2f} s  ({incremental['orders_transformed']} orders)"
    )

    report = {
        "when": datetime.now(UTC).isoformat(),
        "orders": args.orders,
        "changed": len(changed),
        "full": full,
        "incremental": incremental,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mb_before_transform": rss_before,
        "cpu_count": os.cpu_count(),
    }
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB (before the transforms: {rss_before:.0f} MB)")
    write_results(report, args.json, f"transform-{args.orders}")
    return report


if __name__ == "__main__":
    main()
