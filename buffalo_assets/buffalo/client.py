"""A plain Python client for the Buffalo customer API (see shared/buffalo-api.md).

It logs in with the RSA-wrapped password, walks the page-numbered order list, and fetches
order details concurrently over one pooled `requests.Session`, retrying what the API is
known to do wrong (429 with or without Retry-After, 5xx, resets, timeouts, truncated or
HTML bodies) and logging in again once when a ticket expires. It imports nothing from
Dagster so that scripts and benchmarks can use it directly.

The password, its encrypted form and every ticket are kept out of reprs, logs and
exception texts: server excerpts are scrubbed of them before they are shown anywhere.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from Crypto.Cipher import PKCS1_v1_5
from Crypto.PublicKey import RSA
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

PAGE_SIZE = 15
PUBLIC_KEY_PATH = "/buffalo/getRsaPublicKey"
LOGIN_PATH = "/buffalo/login"
ORDER_LIST_PATH = "/mobileapi/myorder/orderList"
ORDER_DETAIL_PATH = "/mobileapi/myorder/detail/{order_id}"
PRODUCTION_ORIGIN = "https://index.buffaloex.com"

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Keys whose presence tells an order detail apart from an error envelope.
ORDER_FIELDS = frozenset(
    {"id", "expressnumber", "thirdnumber", "statusname", "recordMap", "boxList", "createtimeStr"}
)
_EXCERPT_CHARS = 200
# Login and list pages are few, and failing one costs the whole run rather than one
# order, so they always get at least this many tries.
CONTROL_MIN_ATTEMPTS = 6
OWN_LOGINS_PER_CALL = 3


class BuffaloError(Exception):
    """Base class of everything this client raises."""


class BuffaloAuthError(BuffaloError):
    """Login was refused, or the service kept rejecting a fresh ticket."""


class BuffaloApiError(BuffaloError):
    """A call failed: which endpoint, what status, and what the service said (scrubbed)."""

    def __init__(
        self,
        kind: str,
        endpoint: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.status = status
        self.message = message
        self.retryable = retryable
        status_text = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{kind} from {endpoint}{status_text}: {message}")


@dataclass(frozen=True)
class FetchedOrder:
    """An order detail, unwrapped from any envelope, exactly as Buffalo sent it."""

    order_id: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class FetchFailure:
    """An order whose detail could not be fetched in this run, and why."""

    order_id: str
    kind: str
    message: str
    http_status: int | None
    attempts: int


@dataclass(frozen=True)
class OrderPage:
    number: int
    order_ids: list[str]
    record_total: int | None


@dataclass
class ClientStats:
    """Counters a run reports: requests made, retries by reason, logins."""

    requests: int = 0
    retries: int = 0
    logins: int = 0
    relogins: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retry_reasons[reason] += 1

    def count_login(self, *, relogin: bool) -> None:
        with self._lock:
            self.logins += 1
            if relogin:
                self.relogins += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "logins": self.logins,
                "relogins": self.relogins,
                "retry_reasons": dict(self.retry_reasons),
            }


class RequestPacer:
    """Keeps all threads to a request rate, and pauses them all after a Retry-After."""

    def __init__(self, requests_per_second: float) -> None:
        self._interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot, self._paused_until)
            self._next_slot = slot + self._interval
        if slot > now:
            time.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)


def encrypt_password(password: str, public_key_b64: str) -> str:
    """RSA PKCS#1 v1.5 encrypt, base64, then percent-encode with no safe characters."""
    key = RSA.import_key(base64.b64decode(public_key_b64.strip()))
    ciphertext = PKCS1_v1_5.new(key).encrypt(password.encode("utf-8"))
    return quote(base64.b64encode(ciphertext).decode("ascii"), safe="")


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


def parse_order_page(body: Any) -> tuple[list[Any], int | None]:
    """The raw items and `recordTotal` of one list page; raises ValueError if it has no list."""
    data = body.get("data") if isinstance(body, dict) else None
    result = data.get("resultMap") if isinstance(data, dict) else None
    items = result.get("list") if isinstance(result, dict) else None
    if items is None and isinstance(result, dict) and "recordTotal" in result:
        items = []
    if not isinstance(items, list):
        raise ValueError("the response has no data.resultMap.list")
    total = result.get("recordTotal")
    try:
        record_total = int(total) if total is not None else None
    except (TypeError, ValueError):
        record_total = None
    return items, record_total


def unwrap_detail(body: Any) -> dict[str, Any] | None:
    """The order inside a bare or `{"data": ...}`-wrapped detail, or None for an error body."""
    if not isinstance(body, dict):
        return None
    if _looks_like_order(body):
        return body
    inner = body.get("data")
    if isinstance(inner, dict) and _looks_like_order(inner):
        return inner
    return None


def _looks_like_order(candidate: dict[str, Any]) -> bool:
    return not ORDER_FIELDS.isdisjoint(candidate)


def _signals_expired_login(body: Any) -> bool:
    """A JSON body (sent with any status) saying the ticket is no longer valid."""
    if not isinstance(body, dict) or _looks_like_order(body) or isinstance(body.get("data"), dict):
        return False
    if str(body.get("code", "")).strip() in {"401", "403"}:
        return True
    message = str(body.get("msg") or body.get("message") or "").lower()
    return any(w in message for w in ("login", "ticket", "token")) and any(
        w in message for w in ("expire", "invalid", "again", "not logged")
    )


def _body_message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("msg", "message", "error"):
            if body.get(key):
                return str(body[key])
    return "no message"


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Transient(Exception):
    """A failure worth retrying: reason, status and the Retry-After, if any."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after: float | None = None


class BuffaloClient:
    """Talks to one Buffalo base URL as one merchant account."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        concurrency: int = 8,
        requests_per_second: float = 0.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        verify: bool | str = True,
        max_response_bytes: int = 5 * 1024 * 1024,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.concurrency = concurrency
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.max_response_bytes = max_response_bytes
        self.stats = ClientStats()
        self._pacer = RequestPacer(requests_per_second)
        self._ticket: str | None = None
        self._ticket_generation = 0
        self._login_lock = threading.Lock()
        self._local = threading.local()  # per-thread attempt count of the current order
        self._secrets: set[str] = {password} if password else set()
        self._session = requests.Session()
        # Proxy and CA settings are read from the environment once here rather than on
        # every request (requests re-scans os.environ and ~/.netrc per call otherwise,
        # which was a third of the client's CPU per order).
        self._session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self._session.trust_env = False
        if verify is True and self.base_url.startswith("https://"):
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._session.verify = verify
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency + 2, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {
                "Accept": "application/json, text/plain, */*",
                "User-Agent": "buffalo-orders-platform/0.1",
            }
        )

    def __repr__(self) -> str:
        return f"BuffaloClient(base_url={self.base_url!r}, username={self.username!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> BuffaloClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- authentication -------------------------------------------------------------

    def login(self) -> None:
        """Log in with a freshly fetched public key; raises BuffaloAuthError if refused."""
        self._login(relogin=False)

    def _login(self, *, relogin: bool) -> None:
        try:
            encrypted = encrypt_password(self._password, self._public_key())
            self._secrets.add(encrypted)
            body = self._request(
                "POST",
                LOGIN_PATH,
                authenticated=False,
                data=json.dumps({"username": self.username, "password": encrypted}),
                headers={"Content-Type": "application/json;charset=UTF-8"},
            )
        except BuffaloApiError as exc:
            message = f"login to {self.base_url} as {self.username!r} failed: {exc}"
            if exc.retryable:  # the service was unavailable, not refusing: worth another run
                raise BuffaloApiError(
                    exc.kind, exc.endpoint, message, status=exc.status, retryable=True
                ) from None
            raise BuffaloAuthError(message) from None
        data = body.get("data") if isinstance(body, dict) else None
        ticket = data.get("ticket") if isinstance(data, dict) else None
        if not isinstance(ticket, str) or not ticket:
            raise BuffaloAuthError(
                f"login to {self.base_url} as {self.username!r} was refused: "
                f"{self._scrub(_body_message(body))[:_EXCERPT_CHARS]}"
            )
        self._secrets.add(ticket)
        self._ticket = ticket
        self._ticket_generation += 1
        self.stats.count_login(relogin=relogin)
        log.info("logged in to %s as %r", self.base_url, self.username)

    def _public_key(self) -> str:
        """A freshly fetched key that imports; a truncated or HTML body is fetched again."""
        budget = max(self.max_attempts, CONTROL_MIN_ATTEMPTS)
        for attempt in range(1, budget + 1):
            key = _public_key_text(
                self._request("GET", PUBLIC_KEY_PATH, authenticated=False, expect_json=False)
            )
            try:
                RSA.import_key(base64.b64decode(key))
            except (ValueError, IndexError, TypeError):
                if attempt < budget:
                    self.stats.count_retry("bad_public_key")
                    time.sleep(self._backoff(attempt))
                continue
            return key
        raise BuffaloApiError(
            "bad_public_key",
            PUBLIC_KEY_PATH,
            f"gave up after {budget} attempts: the body is not a base64 DER RSA public key",
            retryable=True,
        )

    def _ensure_logged_in(self) -> int:
        with self._login_lock:
            if self._ticket is None:
                self._login(relogin=False)
            return self._ticket_generation

    def _refresh_ticket(self, seen_generation: int) -> bool:
        """Log in again unless another thread already did since `seen_generation`; True if we did."""
        with self._login_lock:
            if self._ticket_generation != seen_generation:
                return False
            log.info("ticket rejected; logging in again")
            self._login(relogin=True)
            return True

    # -- listing ----------------------------------------------------------------------

    def iter_order_pages(self, *, parallel: bool = False) -> Iterator[OrderPage]:
        """Pages of ids not seen earlier in this walk, newest first.

        Stops on an empty page or once `recordTotal` ids were seen; a page that repeats
        only known ids (orders arriving mid-walk shift the pages) never makes it loop.
        With `parallel`, the pages that page 1's `recordTotal` announces are fetched
        `concurrency` at a time (still yielded in order); a consumer that may stop early
        (an incremental walk) should walk sequentially.
        """
        seen: set[str] = set()
        record_total: int | None = None
        pages_without_new = 0
        for number, (items, page_total) in self._list_pages(parallel):
            if not items:
                return
            if page_total is not None:
                record_total = page_total
            fresh: list[str] = []
            for item in items:
                try:
                    order_id = normalize_order_id(item.get("id") if isinstance(item, dict) else None)
                except ValueError as exc:
                    log.warning("skipping a list item on page %d: %s", number, exc)
                    continue
                if order_id not in seen:
                    seen.add(order_id)
                    fresh.append(order_id)
            yield OrderPage(number=number, order_ids=fresh, record_total=record_total)
            if record_total is not None and len(seen) >= record_total:
                return
            pages_without_new = 0 if fresh else pages_without_new + 1
            if pages_without_new >= 3 or number >= self._page_limit(record_total):
                log.warning("stopping the order list walk at page %d", number)
                return

    def _list_pages(self, parallel: bool) -> Iterator[tuple[int, tuple[list[Any], int | None]]]:
        first = self._list_page(1)
        yield 1, first
        number = 1
        if parallel and first[1]:
            last = math.ceil(first[1] / PAGE_SIZE)
            numbers = range(2, last + 1)
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="buffalo-list") as pool:
                yield from zip(numbers, pool.map(self._list_page, numbers), strict=True)
            number = max(last, 1)
        while True:
            number += 1
            yield number, self._list_page(number)

    def _list_page(self, number: int) -> tuple[list[Any], int | None]:
        body = self._call(
            "GET",
            ORDER_LIST_PATH,
            params={"condition": "", "status": 0, "pageNum": number, "language": "en", "tableIndex": 0},
        )
        try:
            return parse_order_page(body)
        except ValueError as exc:
            raise BuffaloApiError("bad_response", ORDER_LIST_PATH, f"page {number}: {exc}") from None

    @staticmethod
    def _page_limit(record_total: int | None) -> int:
        if record_total is None:
            return 1_000_000
        return math.ceil(record_total / PAGE_SIZE) * 2 + 10

    def iter_order_ids(self, *, parallel: bool = False) -> Iterator[str]:
        """Every order id the account can see, each once, newest first."""
        for page in self.iter_order_pages(parallel=parallel):
            yield from page.order_ids

    # -- details ----------------------------------------------------------------------

    def fetch_detail(self, order_id: str) -> dict[str, Any]:
        """One order's detail; raises BuffaloApiError when it cannot be had."""
        path = ORDER_DETAIL_PATH.format(order_id=quote(order_id, safe=""))
        body = self._call(
            "GET",
            path,
            params={"language": "en"},
            headers={"Referer": f"{PRODUCTION_ORIGIN}/client/orders/order-detail?id={order_id}"},
            control=False,
        )
        detail = unwrap_detail(body)
        if detail is None:
            raise BuffaloApiError("detail_error", path, self._scrub(_body_message(body))[:_EXCERPT_CHARS])
        return detail

    def fetch_details(self, order_ids: Iterable[str]) -> Iterator[FetchedOrder | FetchFailure]:
        """Each order's detail or typed failure, in completion order, `concurrency` at a time.

        One order's failure never hides another's result; only an authentication failure
        (which would fail them all) is raised.
        """
        self._ensure_logged_in()
        window = self.concurrency * 4
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="buffalo-fetch") as pool:
            pending: set[Future[FetchedOrder | FetchFailure]] = set()
            for order_id in order_ids:
                pending.add(pool.submit(self._fetch_one, order_id))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)

    def _fetch_one(self, order_id: str) -> FetchedOrder | FetchFailure:
        self._local.attempts = 0
        try:
            payload = self.fetch_detail(order_id)
        except BuffaloAuthError:
            raise
        except BuffaloApiError as exc:
            return FetchFailure(order_id, exc.kind, exc.message, exc.status, self._local.attempts)
        except Exception as exc:  # noqa: BLE001 - one order's surprise must not sink the others
            message = self._scrub(f"{type(exc).__name__}: {exc}")[:_EXCERPT_CHARS]
            return FetchFailure(order_id, "unexpected", message, None, self._local.attempts)
        return FetchedOrder(order_id, payload, self._local.attempts)

    # -- transport ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        control: bool = True,
    ) -> Any:
        """An authenticated call; a rejected ticket leads to one fresh login of its own and a retry.

        When another thread logged in meanwhile, its newer ticket is tried first (without a
        login of this call's own). A call whose own fresh tickets keep being rejected gives up
        with BuffaloAuthError after OWN_LOGINS_PER_CALL of them (a slow call under heavy
        retrying can outlive a short-lived ticket, so one is not always enough).
        """
        generation = self._ensure_logged_in()
        own_logins = 0
        while True:
            try:
                return self._request(method, path, params=params, headers=headers, control=control)
            except _TicketRejected as exc:
                if own_logins >= OWN_LOGINS_PER_CALL:
                    raise BuffaloAuthError(
                        f"{path} still rejected the ticket after {own_logins} fresh logins "
                        f"(HTTP {exc.status})"
                    ) from None
                own_logins += self._refresh_ticket(generation)
                generation = self._ticket_generation

    def _request(
        self,
        method: str,
        path: str,
        *,
        authenticated: bool = True,
        expect_json: bool = True,
        params: dict[str, Any] | None = None,
        data: str | None = None,
        headers: dict[str, str] | None = None,
        control: bool = True,
    ) -> Any:
        """One logical call with retries on transient failures; returns JSON or text.

        `control` calls (login, list pages) get at least CONTROL_MIN_ATTEMPTS tries.
        """
        budget = max(self.max_attempts, CONTROL_MIN_ATTEMPTS) if control else self.max_attempts
        last: _Transient | None = None
        for attempt in range(1, budget + 1):
            self._local.attempts = getattr(self._local, "attempts", 0) + 1
            self._pacer.acquire()
            try:
                return self._attempt(method, path, authenticated, expect_json, params, data, headers)
            except _Transient as exc:
                last = exc
                if attempt == budget:
                    break
                self.stats.count_retry(exc.reason)
                delay = self._backoff(attempt)
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self.max_retry_after) + random.uniform(0, 0.05)
                    self._pacer.pause(delay)
                log.info(
                    "retrying %s %s in %.2fs after %s (attempt %d of %d)",
                    method,
                    path,
                    delay,
                    exc.reason,
                    attempt,
                    budget,
                )
                time.sleep(delay)
        assert last is not None
        raise BuffaloApiError(
            last.reason,
            path,
            f"gave up after {budget} attempts: {last}",
            status=last.status,
            retryable=True,
        )

    def _attempt(
        self,
        method: str,
        path: str,
        authenticated: bool,
        expect_json: bool,
        params: dict[str, Any] | None,
        data: str | None,
        headers: dict[str, str] | None,
    ) -> Any:
        request_headers = dict(headers or {})
        if authenticated:
            assert self._ticket is not None
            request_headers["Authorization"] = self._ticket
            request_headers["Buffalo-Ticket"] = self._ticket
        self.stats.count_request()
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=params,
                data=data,
                headers=request_headers,
                timeout=self.timeout,
                stream=True,
            )
            try:
                raw = self._read_capped(response, path)
            finally:
                response.close()
        except requests.exceptions.SSLError as exc:
            raise BuffaloApiError("tls_error", path, self._scrub(str(exc))[:300]) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            raise _Transient(reason, type(exc).__name__) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Transient("truncated_body", type(exc).__name__) from None
        except requests.exceptions.ContentDecodingError as exc:
            raise _Transient("bad_encoding", type(exc).__name__) from None
        status = response.status_code
        text = raw.decode(response.encoding or "utf-8", errors="replace")
        body: Any = None
        parsed = False
        if expect_json or status >= 400:
            try:
                body = json.loads(text, parse_constant=_reject_constant)
                parsed = True
            except ValueError:
                body = None
        if authenticated and (status in (401, 403) or (parsed and _signals_expired_login(body))):
            raise _TicketRejected(status)
        if status in TRANSIENT_STATUSES:
            transient = _Transient(
                "rate_limited" if status == 429 else f"http_{status}",
                self._excerpt(text),
                status,
            )
            transient.retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            raise transient
        if status >= 400:
            raise BuffaloApiError("http_error", path, self._excerpt(text), status=status)
        if not expect_json:
            return text
        if not parsed:
            raise _Transient("invalid_json", f"body is not JSON: {self._excerpt(text)}", status)
        return body

    def _read_capped(self, response: requests.Response, path: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise BuffaloApiError(
                "too_large",
                path,
                f"response of {int(declared)} bytes exceeds the {self.max_response_bytes}-byte cap",
                status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise BuffaloApiError(
                    "too_large",
                    path,
                    f"response exceeds the {self.max_response_bytes}-byte cap",
                    status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _excerpt(self, text: str) -> str:
        compact = " ".join(text.split())
        return self._scrub(compact)[:_EXCERPT_CHARS] or "empty body"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; a body carrying them is treated as malformed."""
    raise ValueError(f"{name} is not valid JSON")


class _TicketRejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _public_key_text(body: str) -> str:
    """The key is documented as a bare base64 text body; accept a JSON-wrapped one too."""
    text = body.strip()
    if text.startswith(("{", '"')):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, str):
            return parsed
        if isinstance(parsed, dict) and isinstance(parsed.get("data"), str):
            return parsed["data"]
    return text
