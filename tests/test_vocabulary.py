"""One order vocabulary: ingestion, the transform and the client read Buffalo's words alike."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from buffalo_assets.orders.parse import (
    CLEAN_ORDER_SOURCES,
    EVENT_SOURCES,
    ITEM_SOURCES,
    parse_order,
)
from buffalo_assets.orders.vocabulary import TERMINAL_STAGES, is_final_status, stage_of_event, stage_of_status
from buffalo_assets.sandbox.orders import STATUS_NAMES, OrderBook
from buffalo_assets.storage.raw_store import canonical_json, order_ids_to_fetch, payload_sha256
from buffalo_assets.storage.tables import clean_orders, order_events, order_items

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

# statusname -> (stage, final). The first block is what used to disagree: ingestion's SQL
# pattern refetched "Collected" orders forever although the core tables called them
# delivered, and both read a failed delivery ("Not delivered") as delivered and final.
STATUS_TABLE: dict[str, tuple[str, bool]] = {
    "Collected": ("delivered", True),
    "Collected from pick-up point": ("delivered", True),
    "Signed by recipient": ("delivered", True),
    "Not delivered": ("out_for_delivery", False),
    "Not yet delivered": ("out_for_delivery", False),
    "Delivery failed": ("out_for_delivery", False),
    "Undelivered": ("out_for_delivery", False),
    "Failed delivery: recipient not available": ("out_for_delivery", False),
    "Delivery attempt failed: recipient not available": ("out_for_delivery", False),
    "Cancellation": ("cancelled", True),
    "Canceled": ("cancelled", True),
    "Delivered": ("delivered", True),
    "  delivered  ": ("delivered", True),
    "DELIVERED": ("delivered", True),
    "Delivered, signed by recipient": ("delivered", True),
    "Returned": ("returned", True),
    "Returned to sender after failed delivery attempts": ("returned", True),
    "Cancelled": ("cancelled", True),
    "Lost": ("lost", True),
    "Parcel reported lost in transit; claim opened": ("lost", True),
    "Out for delivery": ("out_for_delivery", False),
    "Ready for collection": ("out_for_delivery", False),
    "Arrived at Johannesburg": ("arrived_hub", False),
    "Customs clearance": ("customs", False),
    "In transit": ("in_transit", False),
    "Dispatched": ("dispatched", False),
    "Processing": ("processing", False),
    "Something new from Buffalo": ("unknown", False),
    "": ("unknown", False),
}


@pytest.mark.parametrize(("statusname", "expected"), list(STATUS_TABLE.items()))
def test_each_status_text_has_one_stage_and_failed_deliveries_are_not_final(
    statusname: str, expected: tuple[str, bool]
) -> None:
    stage, final = expected
    assert stage_of_status(statusname) == stage
    assert is_final_status(statusname) is final
    assert (stage in TERMINAL_STAGES) is final


def test_the_sandbox_status_names_read_as_the_stages_they_stand_for() -> None:
    assert {stage: stage_of_status(name) for stage, name in STATUS_NAMES.items()} == {
        stage: stage for stage in STATUS_NAMES
    }


def test_every_sandbox_event_text_reads_as_the_stage_the_sandbox_meant() -> None:
    book = OrderBook(seed=11, count=400, start=NOW.timestamp(), history_days=120)
    mismatched = {
        (event.content, event.stage)
        for index in range(len(book))
        for event in book.plan(index).events
        if stage_of_event(event.content) != event.stage
    }
    assert mismatched == set()


# Raw `statusname` values beyond plain text: the stored JSON value must be read exactly as
# the transform reads it (numbers as text, objects and lists as no status at all).
ODD_STATUS_VALUES: list[Any] = [None, 5, True, {"text": "Delivered"}, ["Delivered"], "Delivered\u200b"]


def _store(engine: sa.Engine, versions: list[tuple[str, dict[str, Any], datetime]]) -> None:
    with engine.begin() as connection:
        for order_id, payload, fetched_at in versions:
            text = canonical_json(payload)
            connection.execute(
                sa.text(
                    "INSERT INTO raw.order_ids (order_id, first_seen_at, last_seen_at) "
                    "VALUES (:o, :t, :t) ON CONFLICT DO NOTHING"
                ),
                {"o": order_id, "t": fetched_at},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO raw.order_versions "
                    "(order_id, payload, payload_sha256, first_fetched_at, last_fetched_at, run_id) "
                    "VALUES (:o, CAST(:p AS jsonb), :h, :t, :t, 'test')"
                ),
                {"o": order_id, "p": text, "h": payload_sha256(text), "t": fetched_at},
            )


def test_ingestion_skips_exactly_the_orders_the_core_tables_call_terminal(empty_store: sa.Engine) -> None:
    payloads: dict[str, dict[str, Any]] = {}
    for n, status in enumerate([*STATUS_TABLE, *ODD_STATUS_VALUES]):
        payloads[f"s{n}"] = {"id": n, "statusname": status, "expressnumber": f"BUF{n}"}
    payloads["no-status"] = {"id": 900, "expressnumber": "BUF900"}
    _store(empty_store, [(order_id, payload, NOW) for order_id, payload in payloads.items()])
    # The latest version decides: an order once "Not delivered" and since collected is done,
    # one once "Delivered" and now "Undelivered" (Buffalo corrected itself) is fetched again.
    _store(
        empty_store,
        [
            ("later-collected", {"id": 901, "statusname": "Not delivered"}, NOW - timedelta(days=2)),
            ("later-collected", {"id": 901, "statusname": "Collected"}, NOW - timedelta(days=1)),
            ("later-undelivered", {"id": 902, "statusname": "Delivered"}, NOW - timedelta(days=2)),
            ("later-undelivered", {"id": 902, "statusname": "Undelivered"}, NOW - timedelta(days=1)),
        ],
    )
    payloads["later-collected"] = {"id": 901, "statusname": "Collected"}
    payloads["later-undelivered"] = {"id": 902, "statusname": "Undelivered"}
    with empty_store.begin() as connection:
        connection.execute(sa.text("INSERT INTO raw.order_ids VALUES ('never-fetched', :t, :t)"), {"t": NOW})

    to_fetch = set(order_ids_to_fetch(empty_store, full_refresh=False))

    terminal = {
        order_id
        for order_id, payload in payloads.items()
        if parse_order(order_id, payload, "h", NOW).order["is_terminal"]
    }
    assert to_fetch == (set(payloads) - terminal) | {"never-fetched"}
    by_status = {p["statusname"]: o for o, p in payloads.items() if isinstance(p.get("statusname"), str)}
    assert by_status["Collected"] not in to_fetch
    assert {by_status[s] for s in ("Not delivered", "Delivery failed", "Undelivered")} <= to_fetch
    assert "later-collected" not in to_fetch and "later-undelivered" in to_fetch
    assert set(order_ids_to_fetch(empty_store, full_refresh=True)) == set(payloads) | {"never-fetched"}


def test_orders_to_fetch_come_newest_first(empty_store: sa.Engine) -> None:
    _store(
        empty_store,
        [
            ("old", {"id": 1, "statusname": "In transit"}, NOW - timedelta(days=3)),
            ("new", {"id": 2, "statusname": "Processing"}, NOW),
            ("middle", {"id": 3, "statusname": "Undelivered"}, NOW - timedelta(days=1)),
        ],
    )
    assert order_ids_to_fetch(empty_store, full_refresh=False) == ["new", "middle", "old"]


def _resolves(payload: Any, path: str) -> bool:
    """True if `a.b[].c` names a field present in the payload (in at least one list element)."""
    head, _, rest = path.partition(".")
    is_list = head.endswith("[]")
    key = head.removesuffix("[]")
    if not isinstance(payload, dict) or key not in payload:
        return False
    value = payload[key]
    if is_list:
        if not isinstance(value, list):
            return False
        return any(_resolves(element, rest) if rest else True for element in value)
    return _resolves(value, rest) if rest else True


def test_column_lineage_covers_every_core_column_and_names_fields_buffalo_sends() -> None:
    book = OrderBook(seed=3, count=200, start=NOW.timestamp(), history_days=90)
    details = [book.detail(index, NOW.timestamp()) for index in range(len(book))]
    raw_row = {"order_id", "payload_sha256"}
    tables = ((clean_orders, CLEAN_ORDER_SOURCES), (order_items, ITEM_SOURCES), (order_events, EVENT_SOURCES))
    for table, sources in tables:
        assert set(sources) == {c.name for c in table.columns} - {"transformed_at"}, table.name
        for column, fields in sources.items():
            for source in fields:
                if source in raw_row:
                    continue
                assert source.startswith("payload."), (table.name, column, source)
                path = source.removeprefix("payload.")
                assert any(_resolves(detail, path) for detail in details), (table.name, column, source)


def test_parsed_rows_have_exactly_the_columns_of_the_core_tables() -> None:
    book = OrderBook(seed=5, count=50, start=NOW.timestamp(), history_days=90)
    parsed = parse_order("31000001", book.detail(0, NOW.timestamp()), "h", NOW)
    assert set(parsed.order) == {c.name for c in clean_orders.columns}
    assert set(parsed.items[0]) == {c.name for c in order_items.columns}
    assert set(parsed.events[0]) == {c.name for c in order_events.columns}


def test_storage_does_not_import_the_client() -> None:
    # The settings (which storage reads) default to the client's options, a plain pydantic
    # model; no client, transport, resource or HTTP library comes with them.
    code = (
        "import sys, buffalo_assets.storage.raw_store, buffalo_assets.storage.core_store;"
        "print(sorted(m for m in sys.modules if m.startswith(('buffalo_assets.buffalo', 'httpx'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(["buffalo_assets.buffalo", "buffalo_assets.buffalo.options"])
