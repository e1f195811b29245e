"""Parsing is total: every variation parses or is refused with a typed, quarantinable error."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buffalo_assets.orders.parse import (
    MAX_TEXT,
    ORDER_FIELDS,
    UnparseableOrder,
    number,
    parse_order,
    split_address,
    timestamp,
)
from buffalo_assets.orders.vocabulary import STAGES
from buffalo_assets.storage import core_store
from buffalo_assets.storage.core_store import TransformError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1.25, Decimal("1.25")),
        ("1.25", Decimal("1.25")),
        (" 1,234.50 ", Decimal("1234.50")),
        ("R 12", Decimal("12")),
        (3, Decimal("3")),
        (float("nan"), None),
        (float("inf"), None),
        ("NaN", None),
        (True, None),
        ("twelve", None),
        ({"$numberDecimal": "1"}, None),
        (1e300, None),
        (-4, Decimal("-4")),
    ],
)
def test_numbers_arrive_as_numbers_or_text_and_anything_else_is_null(raw: object, expected: object) -> None:
    assert number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-01 10:00:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),  # SAST is UTC+2
        ("2026-11-01T10:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        (1_793_520_000_000, datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),  # epoch milliseconds
        ("1793520000000", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        (1_793_520_000, datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),  # epoch seconds
        (0, None),  # 1970 is not a Buffalo order
        ("2026-13-45 99:00:00", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_timestamps_are_south_african_text_or_epoch_and_become_utc(raw: object, expected: object) -> None:
    assert timestamp(raw) == expected


def test_addresses_split_into_street_suburb_city_province_and_postal_code() -> None:
    assert split_address("12 Jacaranda Street, Sandton, Johannesburg, Gauteng, 2196") == {
        "street": "12 Jacaranda Street",
        "suburb": "Sandton",
        "city": "Johannesburg",
        "province": "Gauteng",
        "postal_code": "2196",
    }
    assert split_address("4 Beach Rd, Umhlanga, Durban, KZN")["province"] == "KwaZulu-Natal"
    assert split_address("just a line") == {
        "street": "just a line", "suburb": None, "city": None, "province": None, "postal_code": None,
    }  # fmt: skip
    assert split_address(None)["city"] is None


def test_a_wrapped_payload_parses_like_a_bare_one() -> None:
    bare = {
        "id": 7,
        "statusname": "Delivered",
        "recordMap": [
            {"id": 1, "createtime": "2026-11-01 10:00:00", "content": "Delivered, signed by recipient"}
        ],
        "boxList": [{"detaillist": [{"number": "2", "declaredvalue": "10.50"}]}],
        "newFieldFromBuffalo": {"x": 1},
    }
    a = parse_order("7", bare, "h", NOW)
    b = parse_order("7", {"code": 200, "data": bare}, "h", NOW)
    assert a == b
    assert a.order["stage"] == "delivered"
    assert a.order["delivered_at"] == datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert a.order["declared_value_zar"] == Decimal("21.00")
    assert a.items[0]["quantity"] == 2


def test_duplicate_events_are_kept_once() -> None:
    event = {"id": 5, "createtime": "2026-11-01 10:00:00", "content": "Dispatched"}
    parsed = parse_order("1", {"id": 1, "recordMap": [event, dict(event), {"content": "no id"}]}, "h", NOW)
    assert [e["event_id"] for e in parsed.events].count("5") == 1
    assert len(parsed.events) == 2


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(), max_size=50),
    st.sampled_from(
        ["", " ", "'; DROP TABLE core.clean_orders; --", "1.5", "2026-11-01 10:00:00", "\x00", "x" * 5000]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        *ORDER_FIELDS,
        "receiveaddress",
        "ascertainedweight",
        "finalweight",
        "receivedtax",
        "updatetimeStr",
        "data",
    ]
)
order_like = st.dictionaries(field_names, json_value, max_size=10)
hostile_id = st.text(alphabet=string.printable + "éß中\u200b'\";", min_size=1, max_size=40)


def assert_sound(parsed_order: dict, items: list[dict], events: list[dict]) -> None:
    assert parsed_order["stage"] in STAGES
    if parsed_order["stage"] != "delivered":
        assert parsed_order["delivered_at"] is None  # (a delivered order with no time at all keeps None)
    for value in parsed_order.values():
        if isinstance(value, str):
            assert "\x00" not in value and len(value) <= MAX_TEXT
    assert all(isinstance(i["quantity"], int | type(None)) for i in items)
    assert all(e["stage"] in STAGES for e in events)
    assert len({e["event_id"] for e in events}) == len(events)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(json_value, order_like))
def test_any_json_either_parses_into_sound_rows_or_is_refused_as_unparseable(payload: object) -> None:
    try:
        parsed = parse_order("1", payload, "h", NOW)
    except UnparseableOrder:
        return
    assert_sound(parsed.order, parsed.items, parsed.events)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order_id=hostile_id, payload=order_like)
def test_hostile_payloads_land_whole_or_are_quarantined_and_never_inject_sql(
    order_id: str, payload: dict, empty_store: sa.Engine
) -> None:
    with empty_store.begin() as connection:  # hypothesis runs many examples in one test call
        connection.execute(
            sa.text("TRUNCATE core.clean_orders, core.order_items, core.order_events, ops.transform_errors")
        )
    text = json.dumps(payload, allow_nan=True)
    try:
        parsed = [parse_order(order_id, json.loads(text), "sha", NOW)]
        errors: list[TransformError] = []
    except UnparseableOrder as exc:
        parsed, errors = [], [TransformError(order_id, "sha", str(exc))]
    core_store.replace_orders(empty_store, parsed, errors, "test-run")
    with empty_store.connect() as connection:
        clean = connection.execute(
            sa.text("SELECT count(*) FROM core.clean_orders WHERE order_id = :o"), {"o": order_id}
        ).scalar_one()
        quarantined = connection.execute(
            sa.text("SELECT count(*) FROM ops.transform_errors WHERE order_id = :o"), {"o": order_id}
        ).scalar_one()
        events = connection.execute(
            sa.text("SELECT count(*) FROM core.order_events WHERE order_id = :o"), {"o": order_id}
        ).scalar_one()
        tables = connection.execute(
            sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'core'")
        ).scalar_one()
    assert clean + quarantined == 1
    assert events == (len(parsed[0].events) if parsed else 0)
    assert tables == 3  # nothing was dropped
