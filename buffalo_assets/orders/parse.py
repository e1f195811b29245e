"""From a raw Buffalo order detail to typed rows: total parsing, no surprises.

Every field tolerates what shared/buffalo-api.md warns about: missing or null values,
numbers as strings, timestamps as `YYYY-MM-DD HH:MM:SS` in South African time or as epoch
(milli)seconds, a bare or `{"data": ...}`-wrapped payload, unknown fields. A field that
cannot be read becomes NULL; only a payload that is not an order at all raises
`UnparseableOrder`, which the transform quarantines in `ops.transform_errors`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from buffalo_assets.orders.stages import TERMINAL_STAGES, stage_of_event, stage_of_status

SOURCE_TZ = ZoneInfo("Africa/Johannesburg")
MAX_TEXT = 2_000  # longer free text is cut, so one hostile field cannot bloat a table
ORDER_FIELDS = frozenset(
    {"id", "expressnumber", "thirdnumber", "statusname", "recordMap", "boxList", "createtimeStr"}
)
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


class UnparseableOrder(ValueError):
    """The payload is not an order detail at all."""


@dataclass
class ParsedOrder:
    order: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def text(value: Any) -> str | None:
    """A clean string, or None: no NUL characters, trimmed, at most MAX_TEXT characters."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    result = str(value).replace("\x00", "").strip()
    return result[:MAX_TEXT] or None


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


def unwrap(payload: Any) -> dict[str, Any]:
    """The order inside a bare or `{"data": {...}}` payload; raises UnparseableOrder if none."""
    if not isinstance(payload, dict):
        raise UnparseableOrder(f"the payload is a JSON {type(payload).__name__}, not an object")
    if not ORDER_FIELDS.isdisjoint(payload):
        return payload
    inner = payload.get("data")
    if isinstance(inner, dict) and not ORDER_FIELDS.isdisjoint(inner):
        return inner
    raise UnparseableOrder("the payload has none of the order fields " + ", ".join(sorted(ORDER_FIELDS)))


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


def _event_id(raw: dict[str, Any], at: datetime | None, content: str | None) -> str:
    given = text(raw.get("id"))
    if given:
        return given[:200]
    digest = hashlib.sha1(f"{at.isoformat() if at else ''}|{content or ''}".encode()).hexdigest()  # noqa: S324
    return f"derived:{digest[:16]}"


def _events(order_id: str, detail: dict[str, Any]) -> list[dict[str, Any]]:
    records = detail.get("recordMap")
    if not isinstance(records, list):
        return []
    events: dict[str, dict[str, Any]] = {}
    for raw in records:
        if not isinstance(raw, dict):
            continue
        at = timestamp(raw.get("createtime"))
        content = text(raw.get("content"))
        event_id = _event_id(raw, at, content)
        if event_id in events:
            continue
        events[event_id] = {
            "order_id": order_id,
            "event_id": event_id,
            "event_at": at,
            "description": content,
            "stage": stage_of_event(content),
        }
    far_future = datetime.max.replace(tzinfo=UTC)
    return sorted(events.values(), key=lambda e: (e["event_at"] or far_future, e["event_id"]))


def _items(order_id: str, detail: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    boxes = detail.get("boxList")
    if not isinstance(boxes, list):
        return 0, []
    items: list[dict[str, Any]] = []
    box_count = 0
    for box_index, box in enumerate(boxes, start=1):
        if not isinstance(box, dict):
            continue
        box_count += 1
        lines = box.get("detaillist")
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
                    "description": text(line.get("goodsname")),
                    "quantity": integer(line.get("number")),
                    "declared_value": number(line.get("declaredvalue")),
                    "actual_declared_value": number(line.get("actualdeclaredvalue")),
                }
            )
    return box_count, items


def parse_order(order_id: str, payload: Any, payload_sha256: str, transformed_at: datetime) -> ParsedOrder:
    """Typed rows for `core.clean_orders`, `core.order_items` and `core.order_events`."""
    detail = unwrap(payload)
    status_text = text(detail.get("statusname"))
    stage = stage_of_status(status_text)
    events = _events(order_id, detail)
    box_count, items = _items(order_id, detail)
    created_at = timestamp(detail.get("createtimeStr"))
    updated_at = timestamp(detail.get("updatetimeStr"))
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
    address = text(detail.get("receiveaddress"))
    order = {
        "order_id": order_id,
        "tracking_number": text(detail.get("expressnumber")),
        "third_party_number": text(detail.get("thirdnumber")),
        "status_text": status_text,
        "stage": stage,
        "is_terminal": stage in TERMINAL_STAGES,
        "pay_status": text(detail.get("paystatusname")),
        "duty_status": text(detail.get("taxpaystatusname")),
        "address": address,
        **split_address(address),
        "weight_kg": number(detail.get("ascertainedweight")),
        "volumetric_weight_kg": number(detail.get("ascertainedvolumweight")),
        "billed_weight_kg": number(detail.get("finalweight")),
        "cost_zar": number(detail.get("ascertainedcost")),
        "duty_zar": number(detail.get("receivedtax")),
        "created_at": created_at,
        "updated_at": updated_at,
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
    return ParsedOrder(order=order, items=items, events=events)
