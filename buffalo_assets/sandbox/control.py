"""A small HTTP client for the sandbox's `/_sandbox/` control endpoints.

Works the same whether the sandbox runs in this process or in another one.
"""

from __future__ import annotations

from typing import Any

import requests


class SandboxControl:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(
            method, f"{self.base_url}/_sandbox/{path}", json=body, timeout=self.timeout
        )
        response.raise_for_status()
        return response.json()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "status")

    def advance(self, *, days: float = 0, hours: float = 0) -> dict[str, Any]:
        return self._call("POST", "clock/advance", {"days": days, "hours": hours})

    def surge_customs(self, factor: float) -> dict[str, Any]:
        """Customs takes `factor` times as long from now on (customs process only)."""
        return self._call("POST", "customs/surge", {"factor": factor})

    def add_orders(self, count: int) -> dict[str, Any]:
        return self._call("POST", "orders", {"count": count})

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        return self._call("PUT", "faults", settings)

    def expire_tickets(self) -> int:
        return int(self._call("POST", "tickets/expire")["expired"])

    def mark_gone(self, order_id: str) -> None:
        self._call("POST", f"orders/{order_id}/gone")

    def restore(self, order_id: str) -> None:
        """An order marked gone answers again."""
        self._call("DELETE", f"orders/{order_id}/gone")

    def set_fields(self, order_id: str, **fields: Any) -> None:
        """Replace top-level fields of that order's detail, e.g. `statusname="Returned"`."""
        self._call("PUT", f"orders/{order_id}/fields", fields)

    def clear_fields(self, order_id: str) -> None:
        self._call("DELETE", f"orders/{order_id}/fields")

    def make_unstorable(self, order_id: str, kind: str = "huge_number", field: str | None = None) -> None:
        """Serve that order's detail with `1e400` (kind `huge_number`) or a NUL (`nul`) in `field`."""
        self._call("PUT", f"orders/{order_id}/unstorable", {"kind": kind, "field": field})

    def clear_unstorable(self, order_id: str) -> None:
        self._call("DELETE", f"orders/{order_id}/unstorable")

    def bloat(self, order_id: str, size: int = 6_000_000) -> None:
        """Make that order's detail `size` bytes larger (an oversized response)."""
        self._call("POST", f"orders/{order_id}/bloat", {"bytes": size})

    def stats(self) -> dict[str, int]:
        return self._call("GET", "stats")

    def reset_stats(self) -> None:
        self._call("POST", "stats/reset")

    def truth(self) -> list[dict[str, Any]]:
        return self._call("GET", "truth")["orders"]
