"""From a raw Buffalo order detail to typed rows: total parsing, no surprises.

Every field tolerates what docs/buffalo-api.md warns about: missing or null values,
numbers as strings, timestamps as `YYYY-MM-DD HH:MM:SS` in South African time or as epoch
(milli)seconds, a bare or `{"data": ...}`-wrapped payload, unknown fields. A field that
cannot be read becomes NULL; only a payload that is not an order at all raises
`UnparseableOrder`, which the transform quarantines in `ops.transform_errors`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from buffalo_assets.orders import vocabulary as v
from buffalo_assets.orders.vocabulary import (
    MAX_TEXT,
    ORDER_FIELDS,
    TERMINAL_STAGES,
    UnparseableOrder,
    stage_of_event,
    stage_of_status,
    text,
)
from buffalo_assets.orders.vocabulary import unwrap_order as unwrap

__all__ = [
    "CLEAN_ORDER_SOURCES",
    "EVENT_SOURCES",
    "ITEM_SOURCES",
    "MAX_TEXT",
    "ORDER_FIELDS",
    "ParsedOrder",
    "UnparseableOrder",
    "integer",
    "number",
    "parse_order",
    "split_address",
    "text",
    "timestamp",
    "unwrap",
]

SOURCE_TZ = ZoneInfo("Africa/Johannesburg")
PROVINCES = {
    "gauteng": "Gauteng",
    "gp": "Gauteng",
    "western cape": "Western Cape",
    "wc": "Western Cape",
    "eastern cape": "Eastern Cape",
    "ec": "Eastern Cape",
    "northern cape": "Northern Cape",
    "nc": "Northern Cape",
    "kwazulu-natal": "KwaZulu-Natal",
    "kwazulu natal": "KwaZulu-Natal",
    "kzn": "KwaZulu-Natal",
    "free state": "Free State",
    "fs": "Free State",
    "limpopo": "Limpopo",
    "lp": "Limpopo",
    "mpumalanga": "Mpumalanga",
    "mp": "Mpumalanga",
    "north west": "North West",
    "north-west": "North West",
    "nw": "North West",
}
_POSTAL = re.compile(r"^\d{4}$")
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_MAX_ABS_NUMBER = Decimal("1e12")


@dataclass
class ParsedOrder:
    order: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def number(value: Any) -> Decimal | None:
    """A finite decimal from a number or numeric text ("1.25", " 1,234.50 ", "R 12"), else None.

    Magnitudes of 10^12 and more are refused: no weight, amount or count is that large.
    """
    result = _decimal(value)
    if result is None or abs(result) >= _MAX_ABS_NUMBER:
        return None
    return result


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    cleaned = value.strip().replace(",", "").replace(" ", "").removeprefix("R").removeprefix("ZAR")
    if not _NUMBER_TEXT.match(cleaned):
        return None
    try:
        result = Decimal(cleaned)
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def integer(value: Any) -> int | None:
    parsed = number(value)
    if parsed is None or parsed != parsed.to_integral_value():
        return None
    return int(parsed)


def timestamp(value: Any) -> datetime | None:
    """Aware UTC time from SAST text or epoch seconds/milliseconds; None if not plausible."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if _DATE_TEXT.match(stripped):
            try:
                moment = datetime.fromisoformat(stripped.replace(" ", "T"))
            except ValueError:
                return None
            return _plausible(moment.replace(tzinfo=SOURCE_TZ).astimezone(UTC))
        value = stripped
    epoch = _decimal(value)
    if epoch is None:
        return None
    seconds = float(epoch) / 1000 if abs(epoch) >= 100_000_000_000 else float(epoch)
    try:
        return _plausible(datetime.fromtimestamp(seconds, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def _plausible(moment: datetime) -> datetime | None:
    return moment if 2000 <= moment.year <= 2100 else None


def split_address(address: str | None) -> dict[str, str | None]:
    """Street, suburb, city, province and postal code, where the comma-separated text allows."""
    parts = [p.strip() for p in (address or "").split(",") if p.strip()]
    result: dict[str, str | None] = {
        "street": None,
        "suburb": None,
        "city": None,
        "province": None,
        "postal_code": None,
    }
    if parts and _POSTAL.match(parts[-1]):
        result["postal_code"] = parts.pop()
    province_at = next((i for i in range(len(parts) - 1, -1, -1) if parts[i].lower() in PROVINCES), None)
    if province_at is not None:
        result["province"] = PROVINCES[parts[province_at].lower()]
        parts = parts[:province_at]
    if len(parts) >= 2:
        result["city"] = parts.pop()
    if parts:
        result["street"] = parts[0]
    if len(parts) >= 2:
        result["suburb"] = ", ".join(parts[1:])
    return {k: (v[:MAX_TEXT] if v else v) for k, v in result.items()}


@dataclass(frozen=True)
class Column:
    """An output column and the raw fields it is read from.

    `sources` are `order_id` / `payload_sha256` of the raw row, or `payload.<path>` into the
    detail (`[]` marks a list). A plain column is `read` from the single field `key` of the
    object its path ends in; the parser reads plain columns through this table, and the
    column lineage shown in Dagster is derived from it, so the two cannot drift apart.
    """

    name: str
    sources: tuple[str, ...]
    read: Callable[[Any], Any] | None = None
    key: str = ""


def _row(name: str) -> Column:
    return Column(name, (name,))


def _plain(name: str, path: str, read: Callable[[Any], Any]) -> Column:
    return Column(name, (f"payload.{path}",), read, path.rsplit(".", 1)[-1])


def _derived(name: str, *paths: str) -> Column:
    return Column(name, tuple(f"payload.{path}" for path in paths))


_EVENTS = f"{v.RECORDS}[]"
_EVENT_TIME = f"{_EVENTS}.{v.RECORD_TIME}"
_EVENT_TEXT = f"{_EVENTS}.{v.RECORD_TEXT}"
_BOXES = f"{v.BOXES}[]"
_LINES = f"{_BOXES}.{v.BOX_LINES}[]"
_LINE_QUANTITY = f"{_LINES}.{v.LINE_QUANTITY}"
_LINE_DECLARED_VALUE = f"{_LINES}.{v.LINE_DECLARED_VALUE}"

CLEAN_ORDER_COLUMNS: tuple[Column, ...] = (
    _row("order_id"),
    _plain("tracking_number", v.EXPRESS_NUMBER, text),
    _plain("third_party_number", v.THIRD_NUMBER, text),
    _plain("status_text", v.STATUS_NAME, text),
    _derived("stage", v.STATUS_NAME),
    _derived("is_terminal", v.STATUS_NAME),
    _plain("pay_status", v.PAY_STATUS_NAME, text),
    _plain("duty_status", v.TAX_PAY_STATUS_NAME, text),
    _plain("address", v.RECEIVE_ADDRESS, text),
    _derived("street", v.RECEIVE_ADDRESS),
    _derived("suburb", v.RECEIVE_ADDRESS),
    _derived("city", v.RECEIVE_ADDRESS),
    _derived("province", v.RECEIVE_ADDRESS),
    _derived("postal_code", v.RECEIVE_ADDRESS),
    _plain("weight_kg", v.ASCERTAINED_WEIGHT, number),
    _plain("volumetric_weight_kg", v.ASCERTAINED_VOLUME_WEIGHT, number),
    _plain("billed_weight_kg", v.FINAL_WEIGHT, number),
    _plain("cost_zar", v.ASCERTAINED_COST, number),
    _plain("duty_zar", v.RECEIVED_TAX, number),
    _plain("created_at", v.CREATE_TIME, timestamp),
    _plain("updated_at", v.UPDATE_TIME, timestamp),
    _derived("first_event_at", _EVENT_TIME),
    _derived("delivered_at", _EVENT_TIME, _EVENT_TEXT, v.STATUS_NAME),
    _derived("days_in_transit", _EVENT_TIME, v.CREATE_TIME),
    _derived("box_count", _BOXES),
    _derived("item_count", _LINE_QUANTITY),
    _derived("declared_value_zar", _LINE_DECLARED_VALUE, _LINE_QUANTITY),
    _derived("event_count", f"{_EVENTS}.{v.RECORD_ID}"),
    _row("payload_sha256"),
    Column("transformed_at", ()),  # computed, from no raw field
)
ITEM_COLUMNS: tuple[Column, ...] = (
    _row("order_id"),
    _derived("box_index", _BOXES),
    _derived("line_index", _LINES),
    _plain("description", f"{_LINES}.{v.LINE_GOODS}", text),
    _plain("quantity", _LINE_QUANTITY, integer),
    _plain("declared_value", _LINE_DECLARED_VALUE, number),
    _plain("actual_declared_value", f"{_LINES}.{v.LINE_ACTUAL_DECLARED_VALUE}", number),
)
EVENT_COLUMNS: tuple[Column, ...] = (
    _row("order_id"),
    _derived("event_id", f"{_EVENTS}.{v.RECORD_ID}"),
    _plain("event_at", _EVENT_TIME, timestamp),
    _plain("description", _EVENT_TEXT, text),
    _derived("stage", _EVENT_TEXT),
)


def column_sources(columns: tuple[Column, ...]) -> dict[str, list[str]]:
    """Column lineage: each column read from raw fields -> those fields."""
    return {column.name: list(column.sources) for column in columns if column.sources}


CLEAN_ORDER_SOURCES = column_sources(CLEAN_ORDER_COLUMNS)
ITEM_SOURCES = column_sources(ITEM_COLUMNS)
EVENT_SOURCES = column_sources(EVENT_COLUMNS)
_CLEAN_PLAIN = tuple(c for c in CLEAN_ORDER_COLUMNS if c.read is not None)
_ITEM_PLAIN = tuple(c for c in ITEM_COLUMNS if c.read is not None)
_EVENT_TIME_COLUMN, _EVENT_TEXT_COLUMN = (c for c in EVENT_COLUMNS if c.read is not None)


def _read_plain(columns: tuple[Column, ...], source: dict[str, Any]) -> dict[str, Any]:
    return {c.name: c.read(source.get(c.key)) for c in columns}  # type: ignore[misc]


def _event_id(raw: dict[str, Any], at: datetime | None, content: str | None) -> str:
    given = text(raw.get(v.RECORD_ID))
    if given:
        return given[:200]
    digest = hashlib.sha1(f"{at.isoformat() if at else ''}|{content or ''}".encode()).hexdigest()  # noqa: S324
    return f"derived:{digest[:16]}"


def _events(order_id: str, detail: dict[str, Any]) -> list[dict[str, Any]]:
    records = detail.get(v.RECORDS)
    if not isinstance(records, list):
        return []
    events: dict[str, dict[str, Any]] = {}
    for raw in records:
        if not isinstance(raw, dict):
            continue
        at = _EVENT_TIME_COLUMN.read(raw.get(_EVENT_TIME_COLUMN.key))  # type: ignore[misc]
        content = _EVENT_TEXT_COLUMN.read(raw.get(_EVENT_TEXT_COLUMN.key))  # type: ignore[misc]
        event_id = _event_id(raw, at, content)
        if event_id in events:
            continue
        events[event_id] = {
            "order_id": order_id,
            "event_id": event_id,
            _EVENT_TIME_COLUMN.name: at,
            _EVENT_TEXT_COLUMN.name: content,
            "stage": stage_of_event(content),
        }
    far_future = datetime.max.replace(tzinfo=UTC)
    return sorted(events.values(), key=lambda e: (e["event_at"] or far_future, e["event_id"]))


def _items(order_id: str, detail: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    boxes = detail.get(v.BOXES)
    if not isinstance(boxes, list):
        return 0, []
    items: list[dict[str, Any]] = []
    box_count = 0
    for box_index, box in enumerate(boxes, start=1):
        if not isinstance(box, dict):
            continue
        box_count += 1
        lines = box.get(v.BOX_LINES)
        if not isinstance(lines, list):
            continue
        for line_index, line in enumerate(lines, start=1):
            if not isinstance(line, dict):
                continue
            items.append(
                {
                    "order_id": order_id,
                    "box_index": box_index,
                    "line_index": line_index,
                    **_read_plain(_ITEM_PLAIN, line),
                }
            )
    return box_count, items


def parse_order(order_id: str, payload: Any, payload_sha256: str, transformed_at: datetime) -> ParsedOrder:
    """Typed rows for `core.clean_orders`, `core.order_items` and `core.order_events`."""
    detail = unwrap(payload)
    order = _read_plain(_CLEAN_PLAIN, detail)
    stage = stage_of_status(order["status_text"])
    events = _events(order_id, detail)
    box_count, items = _items(order_id, detail)
    created_at, updated_at = order["created_at"], order["updated_at"]
    timed = [e["event_at"] for e in events if e["event_at"] is not None]
    first_event_at = min(timed) if timed else None
    delivered_at = None
    if stage == "delivered":
        delivered = [e["event_at"] for e in events if e["stage"] == "delivered" and e["event_at"] is not None]
        delivered_at = max(delivered) if delivered else updated_at or (max(timed) if timed else None)
    started = first_event_at or created_at
    if stage in TERMINAL_STAGES:
        ended = delivered_at or updated_at or (max(timed) if timed else None)
    else:
        ended = transformed_at
    days = None
    if started is not None and ended is not None and ended >= started:
        days = round(Decimal((ended - started).total_seconds()) / Decimal(86_400), 2)
    quantities = [i["quantity"] for i in items if i["quantity"] is not None]
    values = [
        i["declared_value"] * i["quantity"]
        for i in items
        if i["declared_value"] is not None and i["quantity"] is not None
    ]
    order.update(
        {
            "order_id": order_id,
            "stage": stage,
            "is_terminal": stage in TERMINAL_STAGES,
            **split_address(order["address"]),
            "first_event_at": first_event_at,
            "delivered_at": delivered_at,
            "days_in_transit": days,
            "box_count": box_count,
            "item_count": sum(quantities),
            "declared_value_zar": sum(values, Decimal(0)).quantize(Decimal("0.01")) if values else None,
            "event_count": len(events),
            "payload_sha256": payload_sha256,
            "transformed_at": transformed_at,
        }
    )
    return ParsedOrder(order=order, items=items, events=events)
