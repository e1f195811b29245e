"""The sandbox HTTP application: Buffalo's API contract, plus control endpoints.

API routes follow shared/buffalo-api.md exactly (paths, parameters, envelopes, RSA login,
ticket headers). Everything under `/_sandbox/` is for tests, benchmarks and demos: move the
clock, add orders, change faults, expire tickets, read request statistics and ground truth.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from Crypto.Cipher import PKCS1_v1_5
from Crypto.PublicKey import RSA
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from buffalo_assets.sandbox.faults import FAILURE_KINDS, FaultDice, FaultPlan
from buffalo_assets.sandbox.orders import DAY, HOUR, OrderBook
from buffalo_assets.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME

PAGE_SIZE = 15
Handler = Callable[[Request], Awaitable[Response]]
_HTML_ERROR = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass
class SandboxConfig:
    orders: int = 1_000
    seed: int = 7
    username: str = SANDBOX_USERNAME
    password: str = SANDBOX_PASSWORD
    start: float | None = None  # epoch seconds of the sandbox clock; default: now
    history_days: float = 60.0
    arrivals_per_day: float | None = None  # default: the historical rate
    variation_rate: float = 0.0
    missing_rate: float = 0.0
    congestion_scale: float = 5.0  # customs congestion of a week: 1 + scale * u^2
    duty_wait_weights: tuple[float, float, float] = (70, 20, 10)  # duty paid in <1, 2-5, 6-15 days
    rotate_keys: bool = False
    faults: FaultPlan = field(default_factory=FaultPlan)


class Sandbox:
    """All sandbox state: the clock, the order book, keys, tickets and statistics."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.now = config.start if config.start is not None else float(int(time.time()))
        self.book = OrderBook(
            seed=config.seed,
            count=config.orders,
            start=self.now,
            history_days=config.history_days,
            variation_rate=config.variation_rate,
            missing_rate=config.missing_rate,
            congestion_scale=config.congestion_scale,
            duty_wait_weights=config.duty_wait_weights,
        )
        self.arrivals_per_day = (
            config.arrivals_per_day
            if config.arrivals_per_day is not None
            else config.orders / config.history_days
        )
        self._arrival_carry = 0.0
        self.dice = FaultDice(config.faults, config.seed)
        self.lock = threading.Lock()
        self.keys: list[RSA.RsaKey] = [RSA.generate(1024)]
        self.tickets: dict[str, float] = {}  # ticket -> expiry (monotonic), inf = never
        self.stats: Counter[str] = Counter()
        self.in_flight = 0
        # Every ticket issued and encrypted password received, so tests can prove that
        # none of them leaks from the client.
        self.secrets_seen: set[str] = set()
        self.bloated: dict[int, int] = {}  # order index -> bytes of junk added to its detail

    # -- clock and orders -----------------------------------------------------------------

    def advance(self, seconds: float) -> int:
        """Move the clock forward; orders progress and new ones arrive. Returns how many."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self.lock:
            before = self.now
            self.now += seconds
            expected = self.arrivals_per_day * seconds / DAY + self._arrival_carry
            arrivals = int(expected)
            self._arrival_carry = expected - arrivals
            if arrivals:
                self.book.add(arrivals, before, self.now)
            return arrivals

    def add_orders(self, count: int) -> None:
        with self.lock:
            self.book.add(count, self.now, self.now)

    def visible_count(self) -> int:
        return self.book.visible_count(self.now)

    # -- auth -----------------------------------------------------------------------------

    def public_key_text(self) -> str:
        with self.lock:
            if self.config.rotate_keys:
                self.keys = [RSA.generate(1024), *self.keys[:3]]
            key = self.keys[0]
        return base64.b64encode(key.publickey().export_key(format="DER")).decode()

    def check_password(self, encoded: str) -> bool:
        self.secrets_seen.update({encoded, unquote(encoded)})
        try:
            ciphertext = base64.b64decode(unquote(encoded), validate=True)
        except (ValueError, TypeError):
            return False
        for key in list(self.keys):
            plain = PKCS1_v1_5.new(key).decrypt(ciphertext, None)
            if plain is not None:
                return hmac.compare_digest(plain, self.config.password.encode())
        return False

    def issue_ticket(self) -> str:
        ticket = secrets.token_hex(24)
        self.secrets_seen.add(ticket)
        ttl = self.config.faults.ticket_ttl_s
        with self.lock:
            self.tickets[ticket] = time.monotonic() + ttl if ttl > 0 else float("inf")
        return ticket

    def ticket_valid(self, ticket: str | None) -> bool:
        if not ticket:
            return False
        expiry = self.tickets.get(ticket)
        return expiry is not None and time.monotonic() < expiry

    def expire_tickets(self) -> int:
        with self.lock:
            count = len(self.tickets)
            self.tickets.clear()
        return count

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def enter(self, endpoint: str) -> None:
        with self.lock:
            self.stats[f"requests.{endpoint}"] += 1
            self.in_flight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _ConnectionDropped(Exception):
    """Raised after a partial response so the server drops the connection."""


class DroppedConnection(Response):
    """Starts a response, sends a few bytes of it, then drops the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"data": {"res', "more_body": True})
        raise _ConnectionDropped


def _failure_response(kind: str, sandbox: Sandbox) -> Response:
    plan = sandbox.config.faults
    if kind == "rate_limit":
        return JSONResponse(
            {"code": 429, "msg": "Too many requests"},
            status_code=429,
            headers={"Retry-After": f"{plan.retry_after_s:g}"},
        )
    if kind == "rate_limit_bare":
        return JSONResponse({"code": 429, "msg": "Too many requests"}, status_code=429)
    if kind == "server_error":
        status = 502 if sandbox.stats["faults.server_error"] % 2 else 503
        return Response(_HTML_ERROR, status_code=status, media_type="text/html")
    if kind == "html":
        return Response(_HTML_ERROR, status_code=200, media_type="text/html")
    if kind == "reset":
        return DroppedConnection()
    raise ValueError(f"not a failure kind: {kind}")


def create_app(sandbox: Sandbox) -> Starlette:
    """The ASGI application serving `sandbox`."""

    async def api(request: Request, endpoint: str, build: Handler) -> Response:
        """Serve one API request: latency, at most one injected failure, else `build`."""
        sandbox.enter(endpoint)
        try:
            kind, latency = sandbox.dice.draw()
            if latency > 0:
                await asyncio.sleep(latency)
            if kind is not None:
                sandbox.count(f"faults.{kind}")
            if kind == "slow":
                await asyncio.sleep(sandbox.config.faults.slow_ms / 1000)
            elif kind not in (None, "truncated"):
                return _failure_response(kind, sandbox)
            response = await build(request)
            if kind == "truncated":
                body = bytes(response.body)
                return Response(body[: len(body) // 2], response.status_code, media_type="application/json")
            return response
        finally:
            sandbox.leave()

    def authorised(request: Request) -> Response | None:
        ticket = request.headers.get("Buffalo-Ticket") or request.headers.get("Authorization")
        if sandbox.ticket_valid(ticket) and request.headers.get("Authorization") == ticket:
            return None
        sandbox.count("auth.rejected")
        body = {"code": 401, "msg": "Login expired, please log in again", "success": False}
        # The real service is not known to use one style; serve both.
        status = 401 if sandbox.stats["auth.rejected"] % 2 else 200
        return JSONResponse(body, status_code=status)

    async def public_key(request: Request) -> Response:
        async def build(_: Request) -> Response:
            return PlainTextResponse(sandbox.public_key_text())

        return await api(request, "public_key", build)

    async def login(request: Request) -> Response:
        async def build(req: Request) -> Response:
            try:
                body = json.loads(await req.body())
                username, password = str(body["username"]), str(body["password"])
            except (ValueError, KeyError, TypeError):
                return JSONResponse({"code": 400, "msg": "Bad request", "data": None})
            ok = username == sandbox.config.username and sandbox.check_password(password)
            if not ok or sandbox.config.faults.reject_logins:
                sandbox.count("logins.refused")
                return JSONResponse(
                    {"code": 1001, "msg": "Incorrect username or password", "success": False, "data": None}
                )
            sandbox.count("logins.ok")
            return JSONResponse(
                {"code": 200, "msg": "success", "success": True, "data": {"ticket": sandbox.issue_ticket()}}
            )

        return await api(request, "login", build)

    async def order_list(request: Request) -> Response:
        async def build(req: Request) -> Response:
            if (denied := authorised(req)) is not None:
                return denied
            try:
                page = int(req.query_params.get("pageNum", "1"))
            except ValueError:
                return JSONResponse({"code": 400, "msg": "pageNum must be a number"})
            total = sandbox.visible_count()
            newest = total - 1 - (max(page, 1) - 1) * PAGE_SIZE
            indexes = range(newest, max(newest - PAGE_SIZE, -1), -1)
            items = [
                {"id": sandbox.book.order_id(i), "expressnumber": sandbox.book.plan(i).tracking_number}
                for i in indexes
            ]
            return JSONResponse(
                {
                    "code": 200,
                    "msg": "success",
                    "success": True,
                    "data": {"resultMap": {"recordTotal": total, "list": items}},
                }
            )

        return await api(request, "list", build)

    async def order_detail(request: Request) -> Response:
        async def build(req: Request) -> Response:
            if (denied := authorised(req)) is not None:
                return denied
            index = sandbox.book.index_of(req.path_params["order_id"])
            if index is None or index >= sandbox.visible_count() or sandbox.book.is_missing(index):
                sandbox.count("details.missing")
                return JSONResponse(
                    {
                        "code": 500,
                        "msg": "Order does not exist or you have no permission to view it",
                        "success": False,
                        "data": None,
                    }
                )
            detail = sandbox.book.detail(index, sandbox.now)
            if index in sandbox.bloated:
                detail["attachmentBlob"] = "x" * sandbox.bloated[index]
            if sandbox.dice.wrap_detail(detail["id"]):
                detail = {"code": 200, "msg": "success", "success": True, "data": detail}
            return JSONResponse(detail)

        return await api(request, "detail", build)

    # -- control endpoints ------------------------------------------------------------------

    async def status(_: Request) -> Response:
        return JSONResponse(
            {
                "now": sandbox.now,
                "orders": sandbox.visible_count(),
                "faults": sandbox.config.faults.as_dict(),
                "seed": sandbox.config.seed,
            }
        )

    async def advance(request: Request) -> Response:
        body = await _json(request)
        seconds = float(body.get("days", 0)) * DAY + float(body.get("hours", 0)) * HOUR
        seconds += float(body.get("seconds", 0))
        try:
            arrived = sandbox.advance(seconds)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"now": sandbox.now, "new_orders": arrived, "orders": sandbox.visible_count()})

    async def add_orders(request: Request) -> Response:
        body = await _json(request)
        sandbox.add_orders(int(body.get("count", 1)))
        return JSONResponse({"orders": sandbox.visible_count()})

    async def set_faults(request: Request) -> Response:
        body = await _json(request)
        try:
            if "rate" in body:
                share = float(body.pop("rate")) / len(FAILURE_KINDS)
                body = {**{kind: share for kind in FAILURE_KINDS}, **body}
            sandbox.config.faults.update(body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(sandbox.config.faults.as_dict())

    async def expire_tickets(_: Request) -> Response:
        return JSONResponse({"expired": sandbox.expire_tickets()})

    async def rotate_key(_: Request) -> Response:
        with sandbox.lock:
            sandbox.keys = [RSA.generate(1024), *sandbox.keys[:3]]
        return JSONResponse({"keys": len(sandbox.keys)})

    async def mark_gone(request: Request) -> Response:
        index = sandbox.book.index_of(request.path_params["order_id"])
        if index is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        sandbox.book.gone.add(index)
        return JSONResponse({"gone": sorted(sandbox.book.order_id(i) for i in sandbox.book.gone)})

    async def bloat(request: Request) -> Response:
        index = sandbox.book.index_of(request.path_params["order_id"])
        if index is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        sandbox.bloated[index] = int((await _json(request)).get("bytes", 6_000_000))
        return JSONResponse({"bloated": len(sandbox.bloated)})

    async def stats(_: Request) -> Response:
        with sandbox.lock:
            return JSONResponse(dict(sandbox.stats))

    async def reset_stats(_: Request) -> Response:
        with sandbox.lock:
            sandbox.stats.clear()
        return JSONResponse({})

    async def truth(request: Request) -> Response:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", "100000"))
        total = sandbox.visible_count()
        rows = [sandbox.book.truth(i, sandbox.now) for i in range(offset, min(total, offset + limit))]
        return JSONResponse({"now": sandbox.now, "total": total, "orders": rows})

    routes = [
        Route("/buffalo/getRsaPublicKey", public_key, methods=["GET"]),
        Route("/buffalo/login", login, methods=["POST"]),
        Route("/mobileapi/myorder/orderList", order_list, methods=["GET"]),
        Route("/mobileapi/myorder/detail/{order_id}", order_detail, methods=["GET"]),
        Route("/_sandbox/status", status, methods=["GET"]),
        Route("/_sandbox/clock/advance", advance, methods=["POST"]),
        Route("/_sandbox/orders", add_orders, methods=["POST"]),
        Route("/_sandbox/orders/{order_id}/gone", mark_gone, methods=["POST"]),
        Route("/_sandbox/orders/{order_id}/bloat", bloat, methods=["POST"]),
        Route("/_sandbox/faults", set_faults, methods=["PUT"]),
        Route("/_sandbox/tickets/expire", expire_tickets, methods=["POST"]),
        Route("/_sandbox/keys/rotate", rotate_key, methods=["POST"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/stats/reset", reset_stats, methods=["POST"]),
        Route("/_sandbox/truth", truth, methods=["GET"]),
    ]
    return Starlette(routes=routes)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object")
    return parsed
