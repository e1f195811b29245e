"""The journey stages of a Buffalo parcel, read from free status and event text.

Buffalo reports status in words (`statusname`) and tracking events as free text; the
analytics need one normalized stage. Rules are keyword patterns tried in order, so that
"Returned to sender after failed delivery attempts" is `returned`, "Handed to the courier
for delivery" is `out_for_delivery` and "Delivered" is `delivered`.
"""

from __future__ import annotations

import re

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
TERMINAL_STAGES = frozenset({"delivered", "returned", "cancelled", "lost"})

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (stage, re.compile(pattern, re.IGNORECASE))
    for stage, pattern in (
        ("cancelled", r"cancel"),
        ("lost", r"\blost\b|missing parcel"),
        ("returned", r"\breturn"),
        (
            "out_for_delivery",
            r"out for delivery|for delivery|delivery attempt|attempted delivery"
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
