"""Per-order edits the tests make to what the sandbox serves (control endpoints).

- `PUT /_sandbox/orders/{id}/fields {"statusname": "Returned"}`: those top-level fields of the
  detail are replaced (Buffalo changing an order after the fact, e.g. a delivered order
  marked returned); `DELETE` the same path: the order shows its own fields again.
- `PUT /_sandbox/orders/{id}/unstorable {"kind": "huge_number" | "nul", "field": "..."}`: the
  detail carries a number out of the double range (`1e400`, which Python reads as infinity)
  or a NUL character (`\\u0000`, which PostgreSQL jsonb refuses) in that field (default
  `ascertainedcost` / `receiveaddress`); `DELETE`: a clean detail again.
- `DELETE /_sandbox/orders/{id}/gone`: an order marked gone answers again.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

UNSTORABLE_KINDS = {"huge_number": "ascertainedcost", "nul": "receiveaddress"}
_HUGE_MARKER = "__sandbox_huge_number_5e1d__"


class OrderEdits:
    """The edits in force, by order index; applied to each detail as it is served."""

    def __init__(self) -> None:
        self.fields: dict[int, dict[str, Any]] = {}
        self.unstorable: dict[int, tuple[str, str]] = {}  # index -> (kind, field)
        self._lock = threading.Lock()

    def set_fields(self, index: int, values: dict[str, Any]) -> None:
        with self._lock:
            self.fields[index] = {**self.fields.get(index, {}), **values}

    def clear_fields(self, index: int) -> None:
        with self._lock:
            self.fields.pop(index, None)

    def set_unstorable(self, index: int, kind: str, field: str | None) -> None:
        if kind not in UNSTORABLE_KINDS:
            raise ValueError(f"kind must be one of {sorted(UNSTORABLE_KINDS)}, not {kind!r}")
        with self._lock:
            self.unstorable[index] = (kind, field or UNSTORABLE_KINDS[kind])

    def clear_unstorable(self, index: int) -> None:
        with self._lock:
            self.unstorable.pop(index, None)

    def apply(self, index: int, detail: dict[str, Any]) -> dict[str, Any]:
        """The bare detail with this order's field edits and unstorable value (as a marker)."""
        values = self.fields.get(index)
        if values:
            detail = {**detail, **values}
        spoiled = self.unstorable.get(index)
        if spoiled is not None:
            kind, field = spoiled
            if kind == "huge_number":
                detail = {**detail, field: _HUGE_MARKER}
            else:
                detail = {**detail, field: f"{detail.get(field) or ''}\x00"}
        return detail

    def response(self, index: int, body: Any) -> Response:
        """The detail (bare or wrapped) as JSON; a huge-number marker becomes the literal 1e400."""
        if index not in self.unstorable:
            return JSONResponse(body)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))  # NUL as the escape \u0000
        text = text.replace(f'"{_HUGE_MARKER}"', "1e400")
        return Response(text, media_type="application/json")


def edit_routes(sandbox: Any) -> list[Route]:
    """The control routes of the edits (`sandbox`: the app's Sandbox, with `edits` and `book`)."""

    def index_of(request: Request) -> int | None:
        return sandbox.book.index_of(request.path_params["order_id"])

    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        parsed = json.loads(raw) if raw else {}
        if not isinstance(parsed, dict):
            raise ValueError("expected a JSON object")
        return parsed

    async def fields(request: Request) -> Response:
        index = index_of(request)
        if index is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        if request.method == "DELETE":
            sandbox.edits.clear_fields(index)
        else:
            try:
                sandbox.edits.set_fields(index, await _body(request))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"fields": sandbox.edits.fields.get(index, {})})

    async def unstorable(request: Request) -> Response:
        index = index_of(request)
        if index is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        if request.method == "DELETE":
            sandbox.edits.clear_unstorable(index)
            return JSONResponse({"unstorable": None})
        try:
            body = await _body(request)
            sandbox.edits.set_unstorable(index, str(body.get("kind", "huge_number")), body.get("field"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"unstorable": list(sandbox.edits.unstorable[index])})

    async def restore(request: Request) -> Response:
        index = index_of(request)
        if index is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        sandbox.book.gone.discard(index)
        return JSONResponse({"gone": sorted(sandbox.book.order_id(i) for i in sandbox.book.gone)})

    return [
        Route("/_sandbox/orders/{order_id}/fields", fields, methods=["PUT", "DELETE"]),
        Route("/_sandbox/orders/{order_id}/unstorable", unstorable, methods=["PUT", "DELETE"]),
        Route("/_sandbox/orders/{order_id}/gone", restore, methods=["DELETE"]),
    ]
