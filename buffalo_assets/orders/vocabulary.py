"""The Buffalo order vocabulary: what Buffalo's order payloads are made of, defined once.

Field names of the order detail, the envelopes the API wraps orders and order lists in,
order id normalisation, and the rules from Buffalo's status and event words to one
journey stage, including which stages are final. The client (telling an order from an
error body), ingestion (which orders can no longer change and are not fetched again) and
the transform (stages, `is_terminal`, `delivered_at`) all read from here, so they cannot
disagree about what a payload means. Imports nothing else of this project.
"""

from __future__ import annotations

import math
import re
from typing import Any

# -- field names of an order detail (see docs/buffalo-api.md) ----------------------------

ID = "id"
EXPRESS_NUMBER = "expressnumber"
THIRD_NUMBER = "thirdnumber"
STATUS_NAME = "statusname"
PAY_STATUS_NAME = "paystatusname"
TAX_PAY_STATUS_NAME = "taxpaystatusname"
RECEIVE_ADDRESS = "receiveaddress"
ASCERTAINED_WEIGHT = "ascertainedweight"
ASCERTAINED_VOLUME_WEIGHT = "ascertainedvolumweight"
FINAL_WEIGHT = "finalweight"
ASCERTAINED_COST = "ascertainedcost"
RECEIVED_TAX = "receivedtax"
CREATE_TIME = "createtimeStr"
UPDATE_TIME = "updatetimeStr"
RECORDS = "recordMap"  # tracking events
RECORD_ID = "id"
RECORD_TIME = "createtime"
RECORD_TEXT = "content"
BOXES = "boxList"
BOX_LINES = "detaillist"
LINE_GOODS = "goodsname"
LINE_QUANTITY = "number"
LINE_DECLARED_VALUE = "declaredvalue"
LINE_ACTUAL_DECLARED_VALUE = "actualdeclaredvalue"

# Keys whose presence tells an order detail apart from an error envelope.
ORDER_FIELDS = frozenset({ID, EXPRESS_NUMBER, THIRD_NUMBER, STATUS_NAME, RECORDS, BOXES, CREATE_TIME})
MAX_TEXT = 2_000  # longer free text is cut, so one hostile field cannot bloat a table


class UnparseableOrder(ValueError):
    """The payload is not an order detail at all."""


# -- envelopes -------------------------------------------------------------------------


def looks_like_order(candidate: dict[str, Any]) -> bool:
    """True if the object carries any field only an order detail has."""
    return not ORDER_FIELDS.isdisjoint(candidate)


def unwrap_detail(body: Any) -> dict[str, Any] | None:
    """The order inside a bare or `{"data": ...}`-wrapped detail, or None for an error body."""
    if not isinstance(body, dict):
        return None
    if looks_like_order(body):
        return body
    inner = body.get("data")
    if isinstance(inner, dict) and looks_like_order(inner):
        return inner
    return None


def unwrap_order(payload: Any) -> dict[str, Any]:
    """Like `unwrap_detail`, but raises UnparseableOrder (naming what was wrong) for a non-order."""
    detail = unwrap_detail(payload)
    if detail is not None:
        return detail
    if not isinstance(payload, dict):
        raise UnparseableOrder(f"the payload is a JSON {type(payload).__name__}, not an object")
    raise UnparseableOrder("the payload has none of the order fields " + ", ".join(sorted(ORDER_FIELDS)))


def parse_order_page(body: Any) -> tuple[list[Any], int | None]:
    """The raw items and `recordTotal` of one list page; raises ValueError if it has no list."""
    data = body.get("data") if isinstance(body, dict) else None
    result = data.get("resultMap") if isinstance(data, dict) else None
    items = result.get("list") if isinstance(result, dict) else None
    if items is None and isinstance(result, dict) and "recordTotal" in result:
        items = []
    if not isinstance(items, list) or not isinstance(result, dict):
        raise ValueError("the response has no data.resultMap.list")
    total = result.get("recordTotal")
    try:
        record_total = int(total) if total is not None else None
    except (TypeError, ValueError, OverflowError):  # not a count (Infinity parses as a float)
        record_total = None
    return items, record_total


def normalize_order_id(raw: Any) -> str:
    """An order id as text: accepts ints, strings and MongoDB's {"$numberLong": "..."}."""
    if isinstance(raw, dict) and set(raw) == {"$numberLong"}:
        raw = raw["$numberLong"]
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"not an order id: {raw!r:.80}")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    raise ValueError(f"not an order id: {raw!r:.80}")


def text(value: Any) -> str | None:
    """A clean string, or None: no NUL characters, trimmed, at most MAX_TEXT characters."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    result = str(value).replace("\x00", "").strip()
    return result[:MAX_TEXT] or None


# -- stages ------------------------------------------------------------------------------

STAGES = (
    "processing",
    "dispatched",
    "in_transit",
    "arrived_hub",
    "customs",
    "out_for_delivery",
    "delivered",
    "returned",
    "cancelled",
    "lost",
    "unknown",
)
# Stages an order never leaves: ingestion stops fetching such orders, and the transform
# counts days in transit up to the end rather than up to now.
TERMINAL_STAGES = frozenset({"delivered", "returned", "cancelled", "lost"})

# Keyword patterns tried in order, so that "Returned to sender after failed delivery
# attempts" is `returned`, "Not delivered" is a failed attempt (`out_for_delivery`, the
# courier tries again) rather than `delivered`, and "Collected" is `delivered`.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (stage, re.compile(pattern, re.IGNORECASE))
    for stage, pattern in (
        ("cancelled", r"cancel"),
        ("lost", r"\blost\b|missing parcel"),
        ("returned", r"\breturn"),
        (
            "out_for_delivery",
            r"out for delivery|for delivery|delivery attempt|attempted delivery"
            r"|\bnot (yet )?delivered\b|\bundeliver|delivery (has )?failed|failed delivery"
            r"|delivery unsuccessful|unsuccessful delivery"
            r"|ready for collection|handed to|last[- ]mile",
        ),
        ("delivered", r"\bdelivered\b|\bcollected\b|\bsigned\b"),
        ("customs", r"custom|\bdut(y|ies)\b|clearance|inspection|\bvat\b"),
        ("arrived_hub", r"\barrived\b|\barrival\b|\bhub\b"),
        ("in_transit", r"transit|flight|depart|depot|on the way|sorting"),
        ("dispatched", r"dispatch|shipped"),
        ("processing", r"process|received|warehouse|weigh|pending|created"),
    )
)


def _stage(words: str | None) -> str:
    if not words:
        return "unknown"
    for stage, pattern in _RULES:
        if pattern.search(words):
            return stage
    return "unknown"


def stage_of_status(statusname: str | None) -> str:
    """The stage a `statusname` such as "Arrived at Johannesburg" stands for."""
    return _stage(statusname)


def stage_of_event(content: str | None) -> str:
    """The stage a tracking event's text such as "Duties paid" belongs to."""
    return _stage(content)


def is_final_status(statusname: Any) -> bool:
    """True if an order whose raw `statusname` value is this can never change again.

    Takes the JSON value as stored (any type), read exactly as the transform reads it.
    """
    return stage_of_status(text(statusname)) in TERMINAL_STAGES
