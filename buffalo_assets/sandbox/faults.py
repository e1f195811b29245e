"""What can go wrong with the sandbox's answers, and how often.

Failure kinds are drawn per API request from one seeded generator; a request suffers at
most one of them. Shape variations (wrapped detail, numbers as strings, unknown fields, ...:
`SHAPES`) are decided per order, so an order's payload stays the same from one fetch to the
next. How an expired ticket and a 429's Retry-After are reported can be fixed or mixed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

# Kinds that make one request fail (the client must retry them).
FAILURE_KINDS = (
    "rate_limit",  # 429 with Retry-After
    "rate_limit_bare",  # 429 without Retry-After
    "server_error",  # 502 or 503
    "reset",  # connection dropped mid-response
    "truncated",  # 200 with half a JSON body
    "html",  # 200 with an HTML error page
    "slow",  # answers only after `slow_ms`
    "forbidden",  # 403 with a gateway's HTML page
    "gateway_timeout",  # 504 with a gateway's HTML page
    "busy",  # list pages only: 200 with {"code": 500, "msg": "system busy"}
)
# Kinds that apply to some endpoints only (elsewhere the request is served normally).
LIST_ONLY_KINDS = frozenset({"busy"})

# Shapes a varied order (`variation_rate`) is served in; `SandboxConfig.shapes` picks which.
SHAPES = (
    "numbers_as_text",  # numbers as JSON strings
    "epoch_ms_times",  # event times as epoch milliseconds
    "unknown_fields",  # fields the contract does not list (insuranceflag, extMap)
    "id_forms",  # the order's id in list pages as "31000002" or {"$numberLong": "31000001"}
    "non_ascii",  # Chinese, Afrikaans diacritics and emoji in names, addresses, goods, events
    "loose_content_type",  # JSON labelled text/html or text/plain without a charset
    "missing_keys",  # fields that would be null are left out
)
# How a rejected ticket is reported: rotated through, or one of them.
EXPIRY_STYLES = ("english", "chinese", "timeout", "empty_data")
RETRY_AFTER_FORMATS = ("seconds", "date")


def check_shapes(shapes: str | Iterable[str]) -> tuple[str, ...]:
    """The shapes named (a comma list or a sequence), or ValueError naming the unknown ones."""
    listed = shapes.split(",") if isinstance(shapes, str) else list(shapes)
    names = [n.strip() for n in listed if n.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown:
        raise ValueError(f"unknown shapes: {', '.join(unknown)} (known: {', '.join(SHAPES)})")
    return tuple(n for n in SHAPES if n in names)


@dataclass
class FaultPlan:
    rate_limit: float = 0.0
    rate_limit_bare: float = 0.0
    server_error: float = 0.0
    reset: float = 0.0
    truncated: float = 0.0
    html: float = 0.0
    slow: float = 0.0
    forbidden: float = 0.0
    gateway_timeout: float = 0.0
    busy: float = 0.0
    slow_ms: float = 1500.0
    retry_after_s: float = 1.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    ticket_ttl_s: float = 0.0  # 0: tickets never expire
    detail_envelope: str = "bare"  # bare | wrapped | mixed
    reject_logins: bool = False
    expiry_style: str = "mixed"  # mixed | english | chinese | timeout | empty_data
    retry_after_format: str = "mixed"  # mixed | seconds | date

    @classmethod
    def mixed(cls, rate: float, **overrides: Any) -> FaultPlan:
        """`rate` of requests fail, spread evenly over every failure kind."""
        share = rate / len(FAILURE_KINDS)
        rates: dict[str, Any] = {kind: share for kind in FAILURE_KINDS}
        return cls(**rates, **overrides)

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            current = getattr(self, name)
            if isinstance(current, bool):
                setattr(self, name, bool(value))
            elif isinstance(current, float):
                setattr(self, name, float(value))
            else:
                setattr(self, name, str(value))
        if self.detail_envelope not in {"bare", "wrapped", "mixed"}:
            raise ValueError("detail_envelope must be bare, wrapped or mixed")
        if self.expiry_style not in {"mixed", *EXPIRY_STYLES}:
            raise ValueError(f"expiry_style must be mixed or one of {', '.join(EXPIRY_STYLES)}")
        if self.retry_after_format not in {"mixed", *RETRY_AFTER_FORMATS}:
            raise ValueError("retry_after_format must be mixed, seconds or date")
        if sum(getattr(self, kind) for kind in FAILURE_KINDS) > 1.0:
            raise ValueError("failure rates add up to more than 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultDice:
    """Draws at most one failure kind per request, reproducibly for a given seed."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> tuple[str | None, float]:
        """The failure kind for this request (or None) and its latency in seconds."""
        with self._lock:
            roll = self._rng.random()
            jitter = self._rng.uniform(0, self.plan.jitter_ms)
        latency = (self.plan.latency_ms + jitter) / 1000
        edge = 0.0
        for kind in FAILURE_KINDS:
            edge += getattr(self.plan, kind)
            if roll < edge:
                return kind, latency
        return None, latency

    def wrap_detail(self, order_id: int) -> bool:
        envelope = self.plan.detail_envelope
        return envelope == "wrapped" or (envelope == "mixed" and order_id % 2 == 0)
