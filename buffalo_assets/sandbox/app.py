"""The sandbox HTTP application: Buffalo's API contract, plus control endpoints.

API routes follow docs/buffalo-api.md exactly (paths, parameters, envelopes, RSA login,
ticket headers). Strict by default (`SandboxConfig.strict`): a request that leaves out what
the contract says the client sends (the ticket headers, the list parameters, the detail's
`Referer`, a JSON login with an RSA-encrypted, percent-encoded password) is refused the way
a gateway or the service would, so the tests prove what the client sends. Everything
under `/_sandbox/` is for tests, benchmarks and demos: move the clock, add orders, change
faults, expire tickets, read request statistics and ground truth.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hmac
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from Crypto.Cipher import PKCS1_v1_5
from Crypto.PublicKey import RSA
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from buffalo_assets.sandbox.edits import OrderEdits, edit_routes
from buffalo_assets.sandbox.faults import (
    EXPIRY_STYLES,
    FAILURE_KINDS,
    LIST_ONLY_KINDS,
    SHAPES,
    FaultDice,
    FaultPlan,
)
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
    delay_process: str = "customs"  # how journeys unfold and run late (sandbox/journeys.py)
    event_language: str = "en"  # the tracking texts' language: en, or zh (backlog process only)
    congestion_scale: float = 5.0  # customs congestion of a week: 1 + scale * u^2
    duty_wait_weights: tuple[float, float, float] = (70, 20, 10)  # duty paid in <1, 2-5, 6-15 days
    rotate_keys: bool = False
    faults: FaultPlan = field(default_factory=FaultPlan)
    strict: bool = True  # refuse requests missing what the contract says the client sends
    shapes: tuple[str, ...] = SHAPES  # the shapes a varied order is served in


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
            delay_process=config.delay_process,
            event_language=config.event_language,
            congestion_scale=config.congestion_scale,
            duty_wait_weights=config.duty_wait_weights,
            shapes=config.shapes,
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
        # API requests numbered as they arrive, and per endpoint the numbers of its first and
        # last one: tests read the order of calls (was a detail asked for before the last
        # list page?) from it.
        self.served = 0
        self.first_last: dict[str, tuple[int, int]] = {}
        # Every ticket issued and encrypted password received, so tests can prove that
        # none of them leaks from the client.
        self.secrets_seen: set[str] = set()
        self.bloated: dict[int, int] = {}  # order index -> bytes of junk added to its detail
        self.edits = OrderEdits()  # per-order field changes and unstorable values (edits.py)

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

    def surge(self, factor: float) -> None:
        """Customs congestion times `factor` from now on (customs process only)."""
        with self.lock:
            self.book.surge(self.now, factor)

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
        """Decrypt with any of the newest keys and compare; strict: count malformed passwords.

        Malformed (`logins.malformed`): not percent-encoded (a raw `+`, `/` or `=`), not
        base64, or no key's PKCS#1 v1.5 decryption accepts it.
        """
        self.secrets_seen.update({encoded, unquote(encoded)})
        plain = self._decrypt_password(encoded)
        if plain is None:
            self.count("logins.malformed")
            return False
        return hmac.compare_digest(plain, self.config.password.encode())

    def _decrypt_password(self, encoded: str) -> bytes | None:
        if self.config.strict and not password_is_percent_encoded(encoded):
            return None
        try:
            ciphertext = base64.b64decode(unquote(encoded), validate=True)
        except (ValueError, TypeError):
            return None
        for key in list(self.keys):
            plain = PKCS1_v1_5.new(key).decrypt(ciphertext, None)
            if plain is not None:
                return bytes(plain)
        return None

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
            self.served += 1
            self.first_last[endpoint] = (self.first_last.get(endpoint, (self.served,))[0], self.served)
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


def password_is_percent_encoded(encoded: str) -> bool:
    """True if `encoded` is base64 percent-encoded with no safe characters (no raw + / =)."""
    return quote(unquote(encoded), safe="") == encoded


def _retry_after(sandbox: Sandbox) -> str:
    """Retry-After as delta-seconds or as an HTTP date (rounded up to the next second)."""
    plan = sandbox.config.faults
    style = plan.retry_after_format
    if style == "mixed":
        style = "date" if sandbox.stats["faults.rate_limit"] % 2 == 0 else "seconds"
    if style == "date":
        return email.utils.formatdate(math.ceil(time.time() + plan.retry_after_s), usegmt=True)
    return f"{plan.retry_after_s:g}"


_GATEWAY_PAGES = {
    status: f"<html><head><title>{status} {title}</title></head><body><center><h1>{status} {title}"
    "</h1></center><hr><center>nginx</center></body></html>"
    for status, title in ((403, "Forbidden"), (504, "Gateway Time-out"))
}


def _failure_response(kind: str, sandbox: Sandbox) -> Response:
    if kind == "rate_limit":
        return JSONResponse(
            {"code": 429, "msg": "Too many requests"},
            status_code=429,
            headers={"Retry-After": _retry_after(sandbox)},
        )
    if kind == "forbidden":
        return Response(_GATEWAY_PAGES[403], status_code=403, media_type="text/html")
    if kind == "gateway_timeout":
        return Response(_GATEWAY_PAGES[504], status_code=504, media_type="text/html")
    if kind == "busy":
        return JSONResponse({"code": 500, "msg": "system busy"})
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


def expired_ticket_answer(sandbox: Sandbox) -> Response:
    """How the service says a ticket is no good, in one of EXPIRY_STYLES (rotated when mixed)."""
    style = sandbox.config.faults.expiry_style
    rejected = sandbox.stats["auth.rejected"]
    if style == "mixed":
        style = EXPIRY_STYLES[rejected % len(EXPIRY_STYLES)]
    if style == "chinese":
        return JSONResponse({"code": 1002, "msg": "登录已过期", "success": False, "data": None})
    if style == "timeout":
        return JSONResponse({"code": 500, "msg": "Session timeout", "success": False})
    if style == "empty_data":
        return JSONResponse({"code": 401, "data": {}})
    body = {"code": 401, "msg": "Login expired, please log in again", "success": False}
    # The real service is not known to use one style; serve both HTTP statuses.
    return JSONResponse(body, status_code=401 if rejected % 2 else 200)


def _bad_request(message: str, sandbox: Sandbox, rule: str) -> Response:
    sandbox.count(f"strict.{rule}")
    return JSONResponse({"code": 400, "msg": message, "success": False, "data": None}, status_code=400)


def strict_list_refusal(request: Request, sandbox: Sandbox) -> Response | None:
    """A list call without `status`, `tableIndex` or `language` is a 400 (strict mode)."""
    if not sandbox.config.strict:
        return None
    for name in ("status", "tableIndex", "language"):
        if name not in request.query_params:
            return _bad_request(f"Required request parameter '{name}' is not present", sandbox, "list_params")
    return None


def detail_referer(order_id: str) -> str:
    return f"https://index.buffaloex.com/client/orders/order-detail?id={order_id}"


def strict_detail_refusal(request: Request, sandbox: Sandbox, order_id: str) -> Response | None:
    """A detail call without the web client's `Referer` for that order is a 400 (strict mode)."""
    if sandbox.config.strict and request.headers.get("Referer") != detail_referer(order_id):
        return _bad_request("Invalid Referer", sandbox, "referer")
    return None


def strict_login_refusal(request: Request, sandbox: Sandbox) -> Response | None:
    """A login whose body is not declared JSON is a 400 (strict mode)."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if sandbox.config.strict and content_type != "application/json":
        return _bad_request(f"Content type '{content_type}' not supported", sandbox, "login_content_type")
    return None


def strict_ticket_refusal(request: Request, sandbox: Sandbox) -> Response | None:
    """A ticketed call without the `Buffalo-Ticket` header is a gateway's 401 (strict mode)."""
    if sandbox.config.strict and not request.headers.get("Buffalo-Ticket"):
        sandbox.count("strict.missing_ticket")
        body = {"code": 401, "msg": "Buffalo-Ticket header required", "success": False}
        return JSONResponse(body, status_code=401)
    return None


def with_content_type(response: Response, content_type: str | None) -> Response:
    """The same body under another Content-Type (exactly that one: no charset added)."""
    if content_type is None:
        return response
    return Response(bytes(response.body), response.status_code, headers={"Content-Type": content_type})


def create_app(sandbox: Sandbox) -> Starlette:
    """The ASGI application serving `sandbox`."""

    async def api(request: Request, endpoint: str, build: Handler) -> Response:
        """Serve one API request: latency, at most one injected failure, else `build`."""
        sandbox.enter(endpoint)
        try:
            kind, latency = sandbox.dice.draw()
            if kind in LIST_ONLY_KINDS and endpoint != "list":
                kind = None
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
        if (missing := strict_ticket_refusal(request, sandbox)) is not None:
            return missing
        ticket = request.headers.get("Buffalo-Ticket") or request.headers.get("Authorization")
        if sandbox.ticket_valid(ticket) and request.headers.get("Authorization") == ticket:
            return None
        sandbox.count("auth.rejected")
        return expired_ticket_answer(sandbox)

    async def public_key(request: Request) -> Response:
        async def build(_: Request) -> Response:
            return PlainTextResponse(sandbox.public_key_text())

        return await api(request, "public_key", build)

    async def login(request: Request) -> Response:
        async def build(req: Request) -> Response:
            if (refused := strict_login_refusal(req, sandbox)) is not None:
                return refused
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
            if (denied := authorised(req) or strict_list_refusal(req, sandbox)) is not None:
                return denied
            try:
                page = int(req.query_params.get("pageNum", "1"))
            except ValueError:
                return JSONResponse({"code": 400, "msg": "pageNum must be a number"})
            total = sandbox.visible_count()
            newest = total - 1 - (max(page, 1) - 1) * PAGE_SIZE
            indexes = range(newest, max(newest - PAGE_SIZE, -1), -1)
            items = [sandbox.book.list_item(i) for i in indexes]
            page_body = JSONResponse(
                {
                    "code": 200,
                    "msg": "success",
                    "success": True,
                    "data": {"resultMap": {"recordTotal": total, "list": items}},
                }
            )
            loose = [sandbox.book.loose_content_type(i) for i in indexes]
            return with_content_type(page_body, loose[0] if loose else None)

        return await api(request, "list", build)

    async def order_detail(request: Request) -> Response:
        async def build(req: Request) -> Response:
            order_id = req.path_params["order_id"]
            if (denied := authorised(req) or strict_detail_refusal(req, sandbox, order_id)) is not None:
                return denied
            index = sandbox.book.index_of(order_id)
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
            detail = sandbox.edits.apply(index, detail)
            if sandbox.dice.wrap_detail(detail["id"]):
                detail = {"code": 200, "msg": "success", "success": True, "data": detail}
            return with_content_type(
                sandbox.edits.response(index, detail), sandbox.book.loose_content_type(index)
            )

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

    async def surge(request: Request) -> Response:
        body = await _json(request)
        try:
            sandbox.surge(float(body.get("factor", 2.0)))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"now": sandbox.now})

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
        Route("/_sandbox/customs/surge", surge, methods=["POST"]),
        Route("/_sandbox/orders/{order_id}/gone", mark_gone, methods=["POST"]),
        Route("/_sandbox/orders/{order_id}/bloat", bloat, methods=["POST"]),
        Route("/_sandbox/faults", set_faults, methods=["PUT"]),
        Route("/_sandbox/tickets/expire", expire_tickets, methods=["POST"]),
        Route("/_sandbox/keys/rotate", rotate_key, methods=["POST"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/stats/reset", reset_stats, methods=["POST"]),
        Route("/_sandbox/truth", truth, methods=["GET"]),
        *edit_routes(sandbox),
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
