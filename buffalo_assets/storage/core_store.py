"""The core store: typed rows built from the latest raw version of each order.

An order's rows in `core.clean_orders`, `core.order_items` and `core.order_events` are
replaced together in one transaction per batch, so no reader ever sees an order's clean
row from one version and its events from another. Which orders need work is tracked by
payload hash: `clean_orders.payload_sha256` (built) and `ops.transform_errors` (could
not be built) against `raw.orders.payload_sha256` (latest).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from buffalo_assets.orders.parse import ParsedOrder
from buffalo_assets.storage.bulk import in_transaction, write_rows
from buffalo_assets.storage.tables import clean_orders, order_events, order_items, transform_errors

CORE_TABLES = (clean_orders, order_items, order_events)


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
    raw = engine.raw_connection()
    try:
        with raw.cursor(name="buffalo_pending_versions") as cursor:
            cursor.itersize = batch_size
            cursor.execute(PENDING_VERSIONS_SQL, {"full_refresh": full_refresh})
            while rows := cursor.fetchmany(batch_size):
                yield [RawVersion(*row) for row in rows]
    finally:
        raw.close()


def replace_orders(
    engine: sa.Engine, parsed: Sequence[ParsedOrder], errors: Sequence[TransformError], run_id: str | None
) -> None:
    """Replace the batch's orders' rows in all three core tables, and record its errors, atomically."""
    in_transaction(engine, lambda connection: _replace(connection, parsed, errors, run_id))


def _replace(
    connection: sa.Connection,
    parsed: Sequence[ParsedOrder],
    errors: Sequence[TransformError],
    run_id: str | None,
) -> None:
    order_ids = [p.order["order_id"] for p in parsed]
    if order_ids:
        for table in (order_items, order_events):
            connection.execute(table.delete().where(table.c.order_id.in_(order_ids)))
        write_rows(connection, clean_orders, [p.order for p in parsed], "upsert", ["order_id"])
        write_rows(connection, order_items, [item for p in parsed for item in p.items], "append")
        write_rows(connection, order_events, [event for p in parsed for event in p.events], "append")
    if errors:
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


def row_count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def preview(engine: sa.Engine, table: sa.Table, *, limit: int = 5, masked: Sequence[str] = ()) -> str:
    """A Markdown table of a few rows, personal columns masked."""
    with engine.connect() as connection:
        frame = pd.read_sql_query(sa.select(table).limit(limit), connection)
    for column in masked:
        if column in frame:
            frame[column] = frame[column].map(lambda v: "***" if v is not None else None)
    return frame.to_markdown(index=False) if not frame.empty else "(no rows)"
