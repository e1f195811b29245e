"""What fetching one order's detail gave: the order, or why not.

Plain records shared by the client (which makes them) and the raw store (which keeps
them), so that storage does not depend on the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FetchedOrder:
    """An order detail, unwrapped from any envelope, exactly as Buffalo sent it.

    `body` is the HTTP response body as received (envelope included), kept so that a
    payload that cannot be stored canonically can be quarantined byte for byte.
    """

    order_id: str
    payload: dict[str, Any]
    attempts: int
    body: bytes | None = None


@dataclass(frozen=True)
class FetchFailure:
    """An order whose detail could not be fetched in this run, and why."""

    order_id: str
    kind: str
    message: str
    http_status: int | None
    attempts: int
