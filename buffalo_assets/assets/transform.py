"""Transform: the `core` tables analysts use, built from the latest raw version of each order.

`clean_orders`, `order_items` and `order_events` are one multi-asset because an order's
rows in the three tables must change together (one transaction per batch of orders).
The asset parses and spills each batch; the Postgres IO manager writes the batches
(`TableBatches` on the `clean_orders` output). It runs by itself whenever `raw_orders`
changes (declarative automation) and only transforms orders whose latest raw payload
changed since the last transform.
"""

import json
import resource
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    Config,
    FreshnessPolicy,
    MetadataValue,
    Output,
    TableColumnDep,
    TableColumnLineage,
    multi_asset,
)
from pydantic import Field

from buffalo_assets.assets.ingestion import FRESH_WITHIN, OWNERS, PROGRESS_EVERY_S, RAW_ORDERS
from buffalo_assets.orders.parse import (
    CLEAN_ORDER_SOURCES,
    EVENT_SOURCES,
    ITEM_SOURCES,
    ParsedOrder,
    UnparseableOrder,
    parse_order,
)
from buffalo_assets.storage import core_store
from buffalo_assets.storage.core_store import TransformError
from buffalo_assets.storage.io_manager import TableBatch, TableBatches, WrittenWith, column_schema
from buffalo_assets.storage.resource import PostgresResource
from buffalo_assets.storage.tables import clean_orders, order_events, order_items

BATCH_ORDERS = 2_000
RAW = AssetKey(RAW_ORDERS)
PERSONAL_COLUMNS = ("address", "street", "suburb")


def _lineage(sources: dict[str, list[str]]) -> TableColumnLineage:
    return TableColumnLineage(
        deps_by_column={
            column: [TableColumnDep(asset_key=RAW, column_name=field) for field in fields]
            for column, fields in sources.items()
        }
    )


def _spec(table: sa.Table, description: str, *, fresh: bool) -> AssetSpec:
    return AssetSpec(
        key=AssetKey(table.name),
        deps=[RAW],
        description=description,
        group_name="core",
        owners=OWNERS,
        kinds={"python", "postgres"},
        automation_condition=AutomationCondition.eager(),
        freshness_policy=FreshnessPolicy.time_window(fail_window=FRESH_WITHIN) if fresh else None,
        metadata={
            "dagster/table_name": f"{table.schema}.{table.name}",
            "dagster/column_schema": column_schema(table),
            "preview_rows": 5,
            "masked_columns": list(PERSONAL_COLUMNS),
        },
    ).with_io_manager_key("postgres_io")


class TransformConfig(Config):
    full_refresh: bool = Field(default=False, description="Rebuild every order, not only changed ones")


@multi_asset(
    specs=[
        _spec(
            clean_orders,
            "One row per order: tracking numbers, journey stage, payment and duty status, delivery "
            "city and province, weights, cost and duty in ZAR, key times (created, first event, "
            "delivered) and days in transit, built from the latest version Buffalo sent.",
            fresh=True,
        ),
        _spec(
            order_items,
            "The goods declared in each order: one row per box and line with quantity and the "
            "declared and actual declared unit values in ZAR.",
            fresh=False,
        ),
        _spec(
            order_events,
            "Each order's tracking events in time order, one row per event (deduplicated by "
            "Buffalo's event id), with the journey stage the event text belongs to.",
            fresh=False,
        ),
    ],
    name="transform_orders",
    can_subset=False,
)
def transform_orders(
    context: AssetExecutionContext, config: TransformConfig, postgres: PostgresResource
) -> Iterator[Output]:
    """Parse the latest raw version of each changed order into the three core tables.

    Each batch is parsed here and spilled to CSV files; the IO manager then writes every
    batch to all three tables in one transaction (the `clean_orders` output carries them,
    the other two outputs report their tables).
    """
    engine = postgres.get_engine()
    started, cpu_started = time.perf_counter(), time.process_time()
    transformed = failed = 0
    logged_at = started
    with tempfile.TemporaryDirectory(prefix="buffalo-transform-") as spill:
        batches: list[TableBatch] = []
        for number, batch in enumerate(
            core_store.pending_versions(engine, full_refresh=config.full_refresh, batch_size=BATCH_ORDERS)
        ):
            now = datetime.now(UTC)
            parsed: list[ParsedOrder] = []
            errors: list[TransformError] = []
            for version in batch:
                try:
                    parsed.append(
                        parse_order(
                            version.order_id, json.loads(version.payload), version.payload_sha256, now
                        )
                    )
                except (UnparseableOrder, ValueError, TypeError, RecursionError) as exc:
                    errors.append(TransformError(version.order_id, version.payload_sha256, _reason(exc)))
            core_store.record_transform_errors(engine, errors, context.run_id)
            batches.append(core_store.spill_batch(Path(spill), number, parsed))
            transformed += len(parsed)
            failed += len(errors)
            if time.perf_counter() - logged_at >= PROGRESS_EVERY_S:
                logged_at = time.perf_counter()
                context.log.info(
                    f"parsed {transformed + failed} orders ({failed} errors), "
                    f"{transformed / (logged_at - started):.0f} orders/s"
                )
        parse_s = time.perf_counter() - started
        if failed:
            context.log.warning(f"{failed} orders could not be transformed; see ops.transform_errors")
        context.log.info(
            f"parsed {transformed} orders into {len(batches)} batches ({failed} errors) in {parse_s:.1f}s; "
            "writing them"
        )
        run_metadata = {
            "orders_transformed": MetadataValue.int(transformed),
            "transform_errors": MetadataValue.int(failed),
            "full_refresh": MetadataValue.bool(config.full_refresh),
            "parse_s": MetadataValue.float(round(parse_s, 3)),
            "elapsed_s": MetadataValue.float(round(parse_s, 3)),
            "orders_per_s": MetadataValue.float(round(transformed / parse_s, 1) if parse_s else 0.0),
            "cpu_ms_per_order": MetadataValue.float(
                round(1000 * (time.process_time() - cpu_started) / max(transformed, 1), 3)
            ),
            "peak_rss_mb": MetadataValue.float(
                round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            ),
        }
        # Dagster writes a yielded output before this generator resumes, so the spill
        # files are still there when the IO manager reads them.
        yield Output(
            TableBatches(batches),
            output_name="clean_orders",
            metadata={"dagster/column_lineage": _lineage(CLEAN_ORDER_SOURCES), **run_metadata},
        )
    for key, sources in (("order_items", ITEM_SOURCES), ("order_events", EVENT_SOURCES)):
        yield Output(
            WrittenWith("clean_orders"),
            output_name=key,
            metadata={"dagster/column_lineage": _lineage(sources), **run_metadata},
        )


def _reason(exc: BaseException) -> str:
    kind = "unparseable" if isinstance(exc, UnparseableOrder) else type(exc).__name__
    return f"{kind}: {str(exc)[:500]}"
