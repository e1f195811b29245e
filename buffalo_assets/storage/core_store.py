"""The core store: typed rows built from the latest raw version of each order.

An order's rows in `core.clean_orders`, `core.order_items` and `core.order_events` are
replaced together in one transaction per batch (a `TableBatch` the IO manager writes), so
no reader ever sees an order's clean row from one version and its events from another.
Which orders need work is tracked by payload hash: `clean_orders.payload_sha256` (built)
and `ops.transform_errors` (could not be built) against `raw.orders.payload_sha256` (latest).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from buffalo_assets.orders.parse import ParsedOrder
from buffalo_assets.storage.bulk import in_transaction, spill_rows
from buffalo_assets.storage.io_manager import TableBatch, TableRows, write_table_batch
from buffalo_assets.storage.tables import clean_orders, order_events, order_items, transform_errors

CORE_TABLES = (clean_orders, order_items, order_events)
KEY_COLUMN = "order_id"


@dataclass(frozen=True)
class RawVersion:
    order_id: str
    payload: str  # JSON text
    payload_sha256: str


@dataclass(frozen=True)
class TransformError:
    order_id: str
    payload_sha256: str
    reason: str


PENDING_VERSIONS_SQL = """
    SELECT o.order_id, o.payload::text, o.payload_sha256
    FROM raw.orders AS o
    LEFT JOIN core.clean_orders AS c ON c.order_id = o.order_id
    LEFT JOIN ops.transform_errors AS e
           ON e.order_id = o.order_id AND e.payload_sha256 = o.payload_sha256
    WHERE %(full_refresh)s
       OR ((c.order_id IS NULL OR c.payload_sha256 <> o.payload_sha256) AND e.order_id IS NULL)
    ORDER BY o.order_id
"""


def pending_versions(engine: sa.Engine, *, full_refresh: bool, batch_size: int) -> Iterator[list[RawVersion]]:
    """Latest raw versions not yet transformed (or all), in batches, streamed from the server.

    A named (server-side) psycopg2 cursor keeps one batch in memory, not the whole table.
    """
    raw: Any = engine.raw_connection()  # psycopg2's, for a named (server-side) cursor
    try:
        with raw.cursor(name="buffalo_pending_versions") as cursor:
            cursor.itersize = batch_size
            cursor.execute(PENDING_VERSIONS_SQL, {"full_refresh": full_refresh})
            while rows := cursor.fetchmany(batch_size):
                yield [RawVersion(*row) for row in rows]
    finally:
        raw.close()


def spill_batch(directory: Path, number: int, parsed: Sequence[ParsedOrder]) -> TableBatch:
    """The batch's rows for the three core tables, spilled to CSV files in `directory`.

    Its keys are the batch's order ids: writing it replaces those orders' rows in all three.
    """
    parts = []
    for table, rows in (
        (clean_orders, [p.order for p in parsed]),
        (order_items, [item for p in parsed for item in p.items]),
        (order_events, [event for p in parsed for event in p.events]),
    ):
        path = directory / f"{number:06d}-{table.name}.csv" if rows else None
        written = spill_rows(path, table, rows) if path is not None else 0
        parts.append(TableRows(f"{table.schema}.{table.name}", path, written))
    return TableBatch(KEY_COLUMN, [p.order[KEY_COLUMN] for p in parsed], parts)


def record_transform_errors(engine: sa.Engine, errors: Sequence[TransformError], run_id: str | None) -> None:
    """Quarantine raw versions that could not be transformed (bookkeeping, not an asset output)."""
    if errors:
        with engine.begin() as connection:
            _record_errors(connection, errors, run_id)


def replace_orders(
    engine: sa.Engine, parsed: Sequence[ParsedOrder], errors: Sequence[TransformError], run_id: str | None
) -> None:
    """Write one batch outside Dagster, as the IO manager would, with its errors, atomically.

    For tests and tools: the assets hand their batches to the IO manager instead.
    """
    with tempfile.TemporaryDirectory(prefix="buffalo-core-") as directory:
        batch = spill_batch(Path(directory), 0, parsed)

        def write(connection: sa.Connection) -> None:
            write_table_batch(connection, batch)
            _record_errors(connection, errors, run_id)

        in_transaction(engine, write)


def _record_errors(connection: sa.Connection, errors: Sequence[TransformError], run_id: str | None) -> None:
    if not errors:
        return
    statement = insert(transform_errors).values(
        [
            {
                "order_id": e.order_id,
                "payload_sha256": e.payload_sha256,
                "reason": e.reason,
                "run_id": run_id,
            }
            for e in errors
        ]
    )
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["order_id", "payload_sha256"],
            set_={"reason": statement.excluded.reason, "run_id": statement.excluded.run_id},
        )
    )
