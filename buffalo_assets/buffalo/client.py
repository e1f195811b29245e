"""A plain Python client for the Buffalo customer API (see docs/buffalo-api.md).

It logs in with the RSA-wrapped password, walks the page-numbered order list, and fetches
order details concurrently, logging in again once when a ticket expires. Every call goes
through `RetryingTransport` (`transport.py`: pooled session, pacing, retries, size cap,
scrubbing, counters); what an order, an order list page or an id looks like comes from the
order vocabulary (`buffalo_assets.orders.vocabulary`). It imports nothing from Dagster so
that scripts and benchmarks can use it directly.

The password, its encrypted form and every ticket are registered with the transport as
secrets and kept out of reprs, logs and exception texts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from Crypto.Cipher import PKCS1_v1_5
from Crypto.PublicKey import RSA

from buffalo_assets.buffalo.options import DEFAULTS, ClientOptions
from buffalo_assets.buffalo.transport import (
    EXCERPT_CHARS,
    TRANSIENT_STATUSES,
    AnswerCheck,
    BuffaloApiError,
    BuffaloAuthError,
    BuffaloError,
    ClientStats,
    CredentialsRejected,
    RequestPacer,
    RetryingTransport,
)
from buffalo_assets.orders.records import FetchedOrder, FetchFailure
from buffalo_assets.orders.vocabulary import (
    ORDER_FIELDS,
    looks_like_order,
    normalize_order_id,
    parse_order_page,
    unwrap_detail,
)

# Names other modules have always imported from here; they live in transport.py and orders/.
__all__ = [
    "ORDER_FIELDS",
    "PAGE_SIZE",
    "TRANSIENT_STATUSES",
    "BuffaloApiError",
    "BuffaloAuthError",
    "BuffaloClient",
    "BuffaloError",
    "ClientStats",
    "FetchFailure",
    "FetchedOrder",
    "OrderPage",
    "RequestPacer",
    "encrypt_password",
    "normalize_order_id",
    "parse_order_page",
    "unwrap_detail",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 15
PUBLIC_KEY_PATH = "/buffalo/getRsaPublicKey"
LOGIN_PATH = "/buffalo/login"
ORDER_LIST_PATH = "/mobileapi/myorder/orderList"
ORDER_DETAIL_PATH = "/mobileapi/myorder/detail/{order_id}"
PRODUCTION_ORIGIN = "https://index.buffaloex.com"

# Login and list pages are few, and failing one costs the whole run rather than one
# order, so they always get at least this many tries.
CONTROL_MIN_ATTEMPTS = 6
OWN_LOGINS_PER_CALL = 3


@dataclass(frozen=True)
class OrderPage:
    number: int
    order_ids: list[str]
    record_total: int | None


def encrypt_password(password: str, public_key_b64: str) -> str:
    """RSA PKCS#1 v1.5 encrypt, base64, then percent-encode with no safe characters."""
    key = RSA.import_key(base64.b64decode(public_key_b64.strip()))
    ciphertext = PKCS1_v1_5.new(key).encrypt(password.encode("utf-8"))
    return quote(base64.b64encode(ciphertext).decode("ascii"), safe="")


AUTH_LIKE_CODES = frozenset({"401", "403"})
SUCCESS_CODES = frozenset({"200", "0"})
AUTH = "auth"  # the answer speaks of the ticket: 401/403, or a JSON code 401/403
SUSPECT = "suspect"  # a JSON answer without data and with a non-success code: maybe the ticket


def _has_data(body: dict[str, Any]) -> bool:
    data = body.get("data")
    return data not in (None, "", {}, [])


def _speaks_of_expired_login(body: dict[str, Any]) -> bool:
    """An English message saying the login expired (one more hint; detection never needs it)."""
    message = str(body.get("msg") or body.get("message") or "").lower()
    return any(w in message for w in ("login", "ticket", "token")) and any(
        w in message for w in ("expire", "invalid", "again", "not logged")
    )


def answer_suspicion(status: int, body: Any) -> str | None:
    """AUTH, SUSPECT or None: whether a ticketed call's answer may mean the ticket is no good.

    HTTP 401/403 (any body) and JSON codes 401/403 are AUTH. A JSON object that is not an
    order, carries no data (`data` missing, null or empty) and has a non-success `code` (not
    200 or 0) or `success: false` is SUSPECT, in whatever language its message is: the real
    service's way of saying "expired" is not known ("登录已过期", "Session timeout", ...).
    429 and 5xx stay transient whatever their body.
    """
    if status in (401, 403):
        return AUTH
    if status in TRANSIENT_STATUSES or not isinstance(body, dict) or looks_like_order(body):
        return None
    if _has_data(body):
        return None
    code = body.get("code")
    code_text = str(code).strip() if code is not None else None
    if code_text in AUTH_LIKE_CODES or _speaks_of_expired_login(body):
        return AUTH
    if (code_text is not None and code_text not in SUCCESS_CODES) or body.get("success") is False:
        return SUSPECT
    return None


def _auth_only(status: int, body: Any) -> str | None:
    """A detail's check once a fresh ticket got a SUSPECT answer: that answer is the order's."""
    verdict = answer_suspicion(status, body)
    return verdict if verdict == AUTH else None


def _auth_or_envelope(status: int, body: Any) -> str | None:
    """A list page's check then: a 200 error envelope is retried, a 4xx is an error as usual."""
    verdict = answer_suspicion(status, body)
    return verdict if verdict == AUTH or (verdict == SUSPECT and status < 300) else None


def _body_message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("msg", "message", "error"):
            if body.get(key):
                return str(body[key])
    return "no message"


class BuffaloClient:
    """Talks to one Buffalo base URL as one merchant account."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        options: ClientOptions = DEFAULTS,
    ) -> None:
        concurrency = options.concurrency
        # List pages fetched beside the details when an ingest overlaps the two (see
        # iter_order_pages): a page brings 15 ids, so concurrency / 10 list requests keep
        # ahead of `concurrency` detail requests whatever the latency.
        self.list_workers = max(1, math.ceil(concurrency / 10))
        self.transport = RetryingTransport(
            base_url, options, connections=concurrency + self.list_workers, answer_check=answer_suspicion
        )
        self.base_url = self.transport.base_url
        self.username = username
        self._password = password
        self.transport.add_secret(password)
        self.concurrency = concurrency
        self.max_attempts = options.max_attempts
        self.stats: ClientStats = self.transport.stats
        # (generation, ticket), replaced as a whole by each login; generation 0: not logged in
        self._current: tuple[int, str | None] = (0, None)
        self._login_lock = threading.Lock()
        self._local = threading.local()  # generation of the ticket this thread sent last

    def __repr__(self) -> str:
        return f"BuffaloClient(base_url={self.base_url!r}, username={self.username!r})"

    def close(self) -> None:
        self.transport.close()

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
            self.transport.add_secret(encrypted)
            body = self.transport.request(
                "POST",
                LOGIN_PATH,
                data=json.dumps({"username": self.username, "password": encrypted}),
                headers={"Content-Type": "application/json;charset=UTF-8"},
                min_attempts=CONTROL_MIN_ATTEMPTS,
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
                f"{self.transport.scrub(_body_message(body))[:EXCERPT_CHARS]}"
            )
        self.transport.add_secret(ticket)
        self._current = (self._current[0] + 1, ticket)
        self.stats.count_login(relogin=relogin)
        log.info("logged in to %s as %r", self.base_url, self.username)

    @property
    def ticket(self) -> str | None:
        """The ticket of the latest login (None before the first)."""
        return self._current[1]

    @property
    def account(self) -> tuple[str, str, str]:
        """Base URL, username and a digest of the password: whose tickets this client can use."""
        return self.base_url, self.username, hashlib.sha256(self._password.encode("utf-8")).hexdigest()

    def use_ticket(self, ticket: str) -> None:
        """Use a ticket an earlier login of the same `account` got, instead of logging in.

        If the service no longer accepts it, the first call logs in again as it does for an
        expired ticket.
        """
        self.transport.add_secret(ticket)
        self._current = (self._current[0] + 1, ticket)

    def _public_key(self) -> str:
        """A freshly fetched key that imports; a truncated or HTML body is fetched again."""
        budget = max(self.max_attempts, CONTROL_MIN_ATTEMPTS)
        for attempt in range(1, budget + 1):
            key = _public_key_text(
                self.transport.request(
                    "GET", PUBLIC_KEY_PATH, expect_json=False, min_attempts=CONTROL_MIN_ATTEMPTS
                )
            )
            try:
                RSA.import_key(base64.b64decode(key))
            except (ValueError, IndexError, TypeError):
                if attempt < budget:
                    self.stats.count_retry("bad_public_key")
                    time.sleep(self.transport.backoff(attempt))
                continue
            return key
        raise BuffaloApiError(
            "bad_public_key",
            PUBLIC_KEY_PATH,
            f"gave up after {budget} attempts: the body is not a base64 DER RSA public key",
            retryable=True,
        )

    @property
    def _ticket_generation(self) -> int:
        return self._current[0]

    def _ensure_logged_in(self) -> None:
        if self._current[1] is not None:  # the common case takes no lock
            return
        with self._login_lock:
            if self._current[1] is None:
                self._login(relogin=False)

    def _refresh_ticket(self, seen_generation: int) -> bool:
        """Log in again unless another thread already did since `seen_generation`; True if we did."""
        with self._login_lock:
            if self._current[0] != seen_generation:
                return False
            log.info("ticket rejected; logging in again")
            self._login(relogin=True)
            return True

    # -- listing ----------------------------------------------------------------------

    def iter_order_pages(self, *, parallel: bool = False, workers: int | None = None) -> Generator[OrderPage]:
        """Pages of ids not seen earlier in this walk, newest first.

        Stops on an empty page or once `recordTotal` ids were seen; a page that repeats
        only known ids (orders arriving mid-walk shift the pages) never makes it loop.
        With `parallel`, the pages that page 1's `recordTotal` announces are fetched
        `workers` (default `concurrency`) at a time, still yielded in order; a consumer that
        may stop early (an incremental walk) should walk sequentially. Closing the iterator
        early cancels the pages not yet requested.
        """
        seen: set[str] = set()
        record_total: int | None = None
        pages_without_new = 0
        for number, (items, page_total) in self._list_pages(parallel, workers or self.concurrency):
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

    def _list_pages(self, parallel: bool, workers: int) -> Iterator[tuple[int, tuple[list[Any], int | None]]]:
        first = self._list_page(1)
        yield 1, first
        number = 1
        if parallel and first[1]:
            last = math.ceil(first[1] / PAGE_SIZE)
            numbers = range(2, last + 1)
            with ThreadPoolExecutor(workers, thread_name_prefix="buffalo-list") as pool:
                try:
                    yield from zip(numbers, pool.map(self._list_page, numbers), strict=True)
                finally:
                    # Closed early (a stopped walk): the pages not yet requested are cancelled
                    # (map submitted them all), the `with` then waits for those in flight.
                    pool.shutdown(wait=False, cancel_futures=True)
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
            message = self.transport.scrub(_body_message(body))[:EXCERPT_CHARS]
            raise BuffaloApiError("detail_error", path, message)
        return detail

    def fetch_details(self, order_ids: Iterable[str]) -> Iterator[FetchedOrder | FetchFailure]:
        """Each order's detail or typed failure, in completion order, `concurrency` at a time.

        One order's failure never hides another's result; only an authentication failure
        (which would fail them all) is raised. `order_ids` is read as it goes (it may be fed
        by a list walk still running), at most `4 * concurrency` orders ahead of the results.
        """
        self._ensure_logged_in()
        window = self.concurrency * 4
        # Finished futures arrive on a queue (O(1) per order; `wait()` on the pending set
        # re-registers a waiter on every pending future for each result).
        finished: queue.SimpleQueue[Future[FetchedOrder | FetchFailure]] = queue.SimpleQueue()
        pending = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="buffalo-fetch") as pool:
            for order_id in order_ids:
                pool.submit(self._fetch_one, order_id).add_done_callback(finished.put)
                pending += 1
                while pending >= window or not finished.empty():
                    pending -= 1
                    yield finished.get().result()
            while pending:
                pending -= 1
                yield finished.get().result()

    def _fetch_one(self, order_id: str) -> FetchedOrder | FetchFailure:
        self.transport.reset_attempts()
        try:
            payload = self.fetch_detail(order_id)
        except BuffaloAuthError:
            raise
        except BuffaloApiError as exc:
            return FetchFailure(order_id, exc.kind, exc.message, exc.status, self.transport.attempts)
        except Exception as exc:  # noqa: BLE001 - one order's surprise must not sink the others
            message = self.transport.scrub(f"{type(exc).__name__}: {exc}")[:EXCERPT_CHARS]
            return FetchFailure(order_id, "unexpected", message, None, self.transport.attempts)
        return FetchedOrder(order_id, payload, self.transport.attempts, self.transport.last_body)

    # -- authenticated calls ---------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        control: bool = True,
    ) -> Any:
        """An authenticated call; an answer that may mean an expired ticket gets a fresh one.

        AUTH answers (401/403, code 401/403): a fresh login (shared: when another thread
        logged in since this call's ticket was sent, its newer ticket is tried without a
        login) and a retry; a call whose own fresh tickets keep being rejected gives up with
        BuffaloAuthError after OWN_LOGINS_PER_CALL logins of its own (a slow call under heavy
        retrying can outlive a short-lived ticket, so one is not always enough).

        SUSPECT answers (no data, a non-success code, in any language): one fresh ticket and
        a retry. When the fresh ticket gets such an answer too, it is about the request, not
        the ticket: a detail returns it (the caller classifies it, e.g. a gone order); a
        control call (a list page) retries it like a 503, with backoff, a fresh ticket each
        time, within its retry budget (at least CONTROL_MIN_ATTEMPTS).
        """
        self._ensure_logged_in()
        own_logins = 0
        suspect_retried = False
        envelope_failures = 0
        budget = max(self.max_attempts, CONTROL_MIN_ATTEMPTS) if control else self.max_attempts
        while True:
            try:
                return self.transport.request(
                    method,
                    path,
                    credentials=self._ticket_headers,
                    params=params,
                    headers=headers,
                    min_attempts=CONTROL_MIN_ATTEMPTS if control else 1,
                    answer_check=self._check_for(control, suspect_retried),
                )
            except CredentialsRejected as exc:
                used = getattr(self._local, "generation", 0)
                if exc.verdict == AUTH:
                    if own_logins >= OWN_LOGINS_PER_CALL and self._ticket_generation == used:
                        raise BuffaloAuthError(
                            f"{path} still rejected the ticket after {own_logins} fresh logins "
                            f"(HTTP {exc.status})"
                        ) from None
                    own_logins += self._refresh_ticket(used)
                    continue
                if suspect_retried and control:
                    envelope_failures += 1
                    message = self.transport.scrub(_body_message(exc.body))[:EXCERPT_CHARS]
                    if envelope_failures >= budget:
                        raise BuffaloApiError(
                            "error_envelope",
                            path,
                            f"gave up after {budget} attempts: {message}",
                            status=exc.status,
                            retryable=True,
                        ) from None
                    self.stats.count_retry("error_envelope")
                    delay = self.transport.backoff(envelope_failures)
                    log.info("retrying %s in %.2fs after an error envelope: %s", path, delay, message)
                    time.sleep(delay)
                suspect_retried = True
                self._refresh_ticket(used)

    @staticmethod
    def _check_for(control: bool, suspect_retried: bool) -> AnswerCheck:
        if not suspect_retried:
            return answer_suspicion
        return _auth_or_envelope if control else _auth_only

    def _ticket_headers(self) -> dict[str, str]:
        generation, ticket = self._current
        assert ticket is not None
        self._local.generation = generation
        return {"Authorization": ticket, "Buffalo-Ticket": ticket}


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
