"""The Postgres IO manager as downstream assets and multi-table writers use it: real Dagster runs,
real PostgreSQL, core tables built from a real sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import AssetIn, AssetKey, AssetSelection, DagsterInstance, Output, asset, multi_asset

from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.orders.parse import parse_order
from buffalo_assets.storage.bulk import as_csv, spill_rows
from buffalo_assets.storage.io_manager import (
    FrameChunks,
    FrameSpill,
    TableBatch,
    TableBatches,
    TableRows,
    WrittenWith,
)
from buffalo_assets.storage.tables import clean_orders, order_events, order_ids
from tests.conftest import SandboxFactory
from tests.pipeline import EVERYTHING, metadata_of, run

ORDERS = 130


@pytest.fixture
def core_built(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> sa.Engine:
    """Core tables built from a sandbox of ORDERS orders, through the real assets."""
    assert run(start_sandbox(orders=ORDERS), pg_url, instance, EVERYTHING).success
    return empty_store


def stored_orders(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text("SELECT order_id, stage FROM core.clean_orders")).all())


def read_downstream(pg_url: str, instance: DagsterInstance, reader: Any) -> tuple[bool, list[str]]:
    """Materialize only `reader`, which reads clean_orders through the IO manager."""
    result = run(None, pg_url, instance, [transform_orders, reader], selection=AssetSelection.assets(reader))
    return result.success, [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]


def test_a_downstream_asset_reads_chosen_columns_of_a_core_table_as_one_dataframe(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance
) -> None:
    received: dict[str, pd.DataFrame] = {}

    @asset(ins={"clean_orders": AssetIn(metadata={"columns": ["order_id", "stage"]})})
    def stage_counts(clean_orders: pd.DataFrame) -> None:
        received["frame"] = clean_orders

    ok, errors = read_downstream(pg_url, instance, stage_counts)
    assert ok, errors
    frame = received["frame"]
    assert list(frame.columns) == ["order_id", "stage"]
    assert dict(zip(frame.order_id, frame.stage, strict=True)) == stored_orders(core_built)
    assert len(frame) == ORDERS


def test_an_input_asking_for_key_order_gets_the_rows_sorted_whatever_order_they_lie_in(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance
) -> None:
    # Updating rows moves them to the end of the heap: disk order is no longer key order.
    with core_built.begin() as connection:
        connection.execute(
            sa.text("UPDATE core.clean_orders SET stage = stage WHERE order_id::bigint % 3 = 0")
        )
        on_disk = connection.execute(sa.text("SELECT order_id FROM core.clean_orders")).scalars().all()
    assert on_disk != sorted(on_disk)
    received: dict[str, pd.DataFrame] = {}

    @asset(ins={"clean_orders": AssetIn(metadata={"columns": ["order_id"], "key_order": True})})
    def in_order(clean_orders: pd.DataFrame) -> None:
        received["sorted"] = clean_orders

    @asset(ins={"clean_orders": AssetIn(metadata={"columns": ["order_id"]})})
    def as_stored(clean_orders: pd.DataFrame) -> None:
        received["plain"] = clean_orders

    for reader in (in_order, as_stored):
        ok, errors = read_downstream(pg_url, instance, reader)
        assert ok, errors
    assert list(received["sorted"].order_id) == sorted(on_disk)
    # Without it, no sort is paid for: the rows come as they lie.
    assert list(received["plain"].order_id) == on_disk


def test_a_downstream_asset_reads_a_core_table_in_chunks_of_the_size_it_asks_for(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance
) -> None:
    received: dict[str, list[pd.DataFrame]] = {}

    @asset(ins={"clean_orders": AssetIn(metadata={"chunk_rows": 50, "columns": ["order_id", "stage"]})})
    def stages_in_chunks(clean_orders: FrameChunks) -> None:
        received["chunks"] = list(clean_orders)

    ok, errors = read_downstream(pg_url, instance, stages_in_chunks)
    assert ok, errors
    chunks = received["chunks"]
    assert [len(chunk) for chunk in chunks] == [50, 50, ORDERS - 100]
    assert all(list(chunk.columns) == ["order_id", "stage"] for chunk in chunks)
    together = pd.concat(chunks)
    assert dict(zip(together.order_id, together.stage, strict=True)) == stored_orders(core_built)


def test_an_input_annotated_frame_chunks_gets_every_column_in_chunks(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance
) -> None:
    received: dict[str, list[pd.DataFrame]] = {}

    @asset(ins={"clean_orders": AssetIn()})
    def whole_orders(clean_orders: FrameChunks) -> None:
        received["chunks"] = list(clean_orders)

    ok, errors = read_downstream(pg_url, instance, whole_orders)
    assert ok, errors
    (chunk,) = received["chunks"]  # the default chunk (50,000 rows) holds all of them
    assert list(chunk.columns) == [c.name for c in clean_orders.columns]
    assert set(chunk.order_id) == set(stored_orders(core_built))


def test_asking_for_a_column_the_table_lacks_fails_naming_the_column_and_the_table(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance
) -> None:
    @asset(ins={"clean_orders": AssetIn(metadata={"columns": ["order_id", "colour"]})})
    def colours(clean_orders: pd.DataFrame) -> None:
        raise AssertionError("the input should not have loaded")

    ok, errors = read_downstream(pg_url, instance, colours)
    assert not ok
    assert "['colour']" in errors[0] and "core.clean_orders" in errors[0]


def _batch_for(engine: sa.Engine, directory: Path, order_id: str, *, event_stage: str) -> TableBatch:
    """A batch rewriting `order_id` in clean_orders and order_events, from its stored payload."""
    with engine.connect() as connection:
        payload, sha = connection.execute(
            sa.text("SELECT payload::text, payload_sha256 FROM raw.orders WHERE order_id = :o"),
            {"o": order_id},
        ).one()
    parsed = parse_order(order_id, json.loads(payload), sha, pd.Timestamp.now(tz="UTC").to_pydatetime())
    parsed.order["status_text"] = "rewritten by the test"
    events = [{**event, "stage": event_stage} for event in parsed.events]
    parts = []
    for table, rows in ((clean_orders, [parsed.order]), (order_events, events)):
        path = directory / f"{table.name}.csv"
        parts.append(TableRows(f"core.{table.name}", path, spill_rows(path, table, rows)))
    return TableBatch("order_id", [order_id], parts)


def _two_table_writer(batch: TableBatch) -> Any:
    @multi_asset(
        specs=[
            spec.with_io_manager_key("postgres_io")
            for spec in transform_orders.specs
            if spec.key in (AssetKey("clean_orders"), AssetKey("order_events"))
        ],
        name="rewrite_one_order",
    )
    def rewrite_one_order() -> Any:
        yield Output(TableBatches([batch]), output_name="clean_orders")
        yield Output(WrittenWith("clean_orders"), output_name="order_events")

    return rewrite_one_order


def test_chunks_serialised_ahead_are_upserted_like_the_frames_they_came_from(
    pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    """`CsvChunks` (what raw_orders hands over: its chunks put into CSV while it fetched)."""
    now = pd.Timestamp("2026-11-30 12:00", tz="UTC")
    later = now + pd.Timedelta(hours=1)
    frames = [
        pd.DataFrame({"order_id": ["a1", "a2"], "first_seen_at": now, "last_seen_at": now}),
        pd.DataFrame({"order_id": ["a2", "a3"], "first_seen_at": later, "last_seen_at": later}),
    ]

    @asset(
        io_manager_key="postgres_io",
        metadata={
            "dagster/table_name": "raw.order_ids",
            "write_mode": "upsert",
            "primary_key": ["order_id"],
            "update_columns": ["last_seen_at"],
        },
    )
    def listed() -> Iterator[Output]:
        with FrameSpill() as spill:
            for frame in frames:
                spill.append(as_csv(order_ids, frame))
            yield Output(spill.read_back_csv())

    result = run(None, pg_url, instance, [listed])
    assert result.success
    written = metadata_of(result, "listed")
    assert (written["rows_written"], written["chunks"]) == (4, 2)
    assert (written["rows_inserted"], written["rows_updated"]) == (3, 1)
    with empty_store.connect() as connection:
        query = "SELECT order_id, first_seen_at, last_seen_at FROM raw.order_ids"
        rows = connection.execute(sa.text(query)).all()
    assert {row.order_id: (row.first_seen_at, row.last_seen_at) for row in rows} == {
        "a1": (now, now),
        "a2": (now, later),  # first seen kept, last seen updated
        "a3": (later, later),
    }


def test_a_table_batch_replaces_an_orders_rows_in_every_table_together(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance, tmp_path: Path
) -> None:
    order_id = "31000007"
    batch = _batch_for(core_built, tmp_path, order_id, event_stage="customs")
    result = run(None, pg_url, instance, [_two_table_writer(batch)])
    assert result.success
    with core_built.connect() as connection:
        status = connection.execute(
            sa.text("SELECT status_text FROM core.clean_orders WHERE order_id = :o"), {"o": order_id}
        ).scalar_one()
        stages = connection.execute(
            sa.text("SELECT DISTINCT stage FROM core.order_events WHERE order_id = :o"), {"o": order_id}
        ).all()
    assert status == "rewritten by the test" and stages == [("customs",)]
    clean, events = metadata_of(result, "clean_orders"), metadata_of(result, "order_events")
    assert clean["rows_written_by_table"] == {
        "core.clean_orders": 1,
        "core.order_events": batch.tables[1].rows,
    }
    assert clean["dagster/row_count"] == ORDERS and clean["dagster/table_name"] == "core.clean_orders"
    assert events["written_with"] == "clean_orders" and events["dagster/table_name"] == "core.order_events"
    assert [c.name for c in events["dagster/column_schema"].columns] == [c.name for c in order_events.columns]


def test_a_table_batch_that_fails_in_one_table_changes_no_table(
    core_built: sa.Engine, pg_url: str, instance: DagsterInstance, tmp_path: Path
) -> None:
    order_id = "31000008"
    snapshot = "SELECT {0}::text, xmin::text FROM core.{1} WHERE order_id = '31000008' ORDER BY 1"
    tables = {"clean_orders": "order_id", "order_events": "event_id"}
    with core_built.connect() as connection:
        before = {t: connection.execute(sa.text(snapshot.format(k, t))).all() for t, k in tables.items()}
    # 'teleported' is not a stage: order_events' CHECK refuses the batch after clean_orders was written.
    batch = _batch_for(core_built, tmp_path, order_id, event_stage="teleported")
    result = run(None, pg_url, instance, [_two_table_writer(batch)])
    assert not result.success
    errors = [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
    assert "order_events_stage" in errors[0]  # refused by the CHECK, after clean_orders was written
    with core_built.connect() as connection:
        after = {t: connection.execute(sa.text(snapshot.format(k, t))).all() for t, k in tables.items()}
    assert after == before and before["order_events"]
