"""What can go wrong with the sandbox's answers, and how often.

Failure kinds are drawn per API request from one seeded generator; a request suffers at
most one of them. Shape variations (wrapped detail, numbers as strings, unknown fields)
are decided per order, so an order's payload stays the same from one fetch to the next.
"""

from __future__ import annotations

import random
import threading
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
)


@dataclass
class FaultPlan:
    rate_limit: float = 0.0
    rate_limit_bare: float = 0.0
    server_error: float = 0.0
    reset: float = 0.0
    truncated: float = 0.0
    html: float = 0.0
    slow: float = 0.0
    slow_ms: float = 1500.0
    retry_after_s: float = 1.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    ticket_ttl_s: float = 0.0  # 0: tickets never expire
    detail_envelope: str = "bare"  # bare | wrapped | mixed
    reject_logins: bool = False

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
