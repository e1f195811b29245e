"""A retrying HTTP transport for one base URL: what any call to the Buffalo API goes through.

One pooled `requests.Session` (ticketed calls go straight to its urllib3 connection pool,
without requests' per-call work); a shared request pacer; retries with exponential backoff and
jitter on what the API is known to do wrong (429 with or without Retry-After, 5xx, resets,
timeouts, truncated or HTML bodies); a cap on response size; counters; and typed errors
whose texts are scrubbed of every secret registered with `add_secret`. It knows nothing
of logins, tickets or orders: the caller passes the credentials of each attempt and says
which answers mean they were rejected.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.exceptions import (
    ClosedPoolError,
    DecodeError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import (
    ConnectTimeoutError as Urllib3ConnectTimeout,
)

from buffalo_assets.buffalo.options import DEFAULTS, ClientOptions

log = logging.getLogger(__name__)

# 403 is here for calls without credentials (the key and the login), where it can only be a
# gateway's refusal (a WAF or load balancer page); on a ticketed call the caller's check sees
# it first and treats it as a rejected ticket.
TRANSIENT_STATUSES = frozenset({403, 429, 500, 502, 503, 504})
EXCERPT_CHARS = 200


class BuffaloError(Exception):
    """Base class of everything the client raises."""


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


class CredentialsRejected(Exception):
    """The answer may mean the attempt's credentials are no longer valid (the caller decides).

    `verdict` is what the caller's check said, `body` the parsed JSON answer (or None).
    """

    def __init__(self, status: int, verdict: str = "rejected", body: Any = None) -> None:
        super().__init__(status)
        self.status = status
        self.verdict = verdict
        self.body = body


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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header, delta-seconds or an HTTP date (None: unreadable)."""
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


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; a body carrying them is treated as malformed."""
    raise ValueError(f"{name} is not valid JSON")


class _Transient(Exception):
    """A failure worth retrying: reason, status and the Retry-After, if any."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after: float | None = None


# (status, parsed JSON body or None) -> None when the answer is to be handled as usual, or a
# verdict: REJECTED-like texts raise CredentialsRejected (the caller decides what to do),
# a text starting with RETRY_PREFIX makes the answer a transient failure with that reason.
AnswerCheck = Callable[[int, Any], str | None]
RETRY_PREFIX = "retry:"


def _reject_401_403(status: int, body: Any) -> str | None:
    return "rejected" if status in (401, 403) else None


class RetryingTransport:
    """Calls paths under one base URL with retries; thread-safe, one pooled session."""

    def __init__(
        self,
        base_url: str,
        options: ClientOptions = DEFAULTS,
        *,
        connections: int | None = None,
        answer_check: AnswerCheck | None = None,
    ) -> None:
        """`connections`: requests in flight at once (default `options.concurrency`)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = (options.connect_timeout, options.read_timeout)
        self.max_attempts = options.max_attempts
        self.backoff_base = options.backoff_base
        self.backoff_max = options.backoff_max
        self.max_retry_after = options.max_retry_after
        self.max_response_bytes = options.max_response_bytes
        self.stats = ClientStats()
        self._answer_check = answer_check or _reject_401_403
        self._pacer = RequestPacer(options.requests_per_second)
        self._local = threading.local()  # per-thread attempt count of the current unit of work
        self._secrets: set[str] = set()
        self._session = requests.Session()
        # Proxy and CA settings (HTTPS_PROXY, REQUESTS_CA_BUNDLE, ...) are resolved by
        # requests once here rather than on every request (it re-scans the environment and
        # ~/.netrc per call otherwise, which was a third of the client's CPU per order).
        resolved = self._session.merge_environment_settings(self.base_url, {}, None, options.verify, None)
        self._session.proxies = resolved["proxies"]
        self._session.verify = resolved["verify"]
        self._session.trust_env = False
        in_flight = connections or options.concurrency
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=in_flight + 2, max_retries=0)
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._session.headers.update(
            {
                "Accept": "application/json, text/plain, */*",
                "User-Agent": "buffalo-orders-platform/0.1",
            }
        )
        # The direct path (see `_send_direct`): the base URL's urllib3 pool, set up by the
        # adapter itself on first use (so TLS checks are requests' own); not through a proxy.
        self._direct = select_proxy(self.base_url, self._session.proxies) is None
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._timeout = urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout)
        self._path_prefix = urlsplit(self.base_url).path  # sent as origin-form, like requests

    def __repr__(self) -> str:
        return f"RetryingTransport(base_url={self.base_url!r})"

    @property
    def verify(self) -> bool | str:
        """What TLS certificates are checked against (False: not checked)."""
        return self._session.verify if self._session.verify is not None else True

    def close(self) -> None:
        self._pool = None
        self._session.close()

    # -- secrets ----------------------------------------------------------------------

    def add_secret(self, secret: str) -> None:
        """Never show this text in an error or log again."""
        if secret:
            self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def excerpt(self, text: str) -> str:
        compact = " ".join(text.split())
        return self.scrub(compact)[:EXCERPT_CHARS] or "empty body"

    # -- attempts of the current thread's unit of work ----------------------------------

    def reset_attempts(self) -> None:
        self._local.attempts = 0

    @property
    def attempts(self) -> int:
        """HTTP attempts this thread made since `reset_attempts`."""
        return getattr(self._local, "attempts", 0)

    @property
    def last_body(self) -> bytes | None:
        """The raw body of this thread's latest response (for quarantining what cannot be stored)."""
        return getattr(self._local, "body", None)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed try `attempt`: exponential, capped, half of it jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        credentials: Callable[[], Mapping[str, str]] | None = None,
        expect_json: bool = True,
        params: dict[str, Any] | None = None,
        data: str | None = None,
        headers: dict[str, str] | None = None,
        min_attempts: int = 1,
        answer_check: AnswerCheck | None = None,
    ) -> Any:
        """One logical call with retries on transient failures; returns JSON or text.

        `credentials` gives the headers of each attempt (read afresh, so a login by another
        thread is picked up by the next try); an answer that the check (`answer_check`, else
        the transport's) calls a rejection raises CredentialsRejected without retrying, one
        it calls "retry:<reason>" is retried like a 503. At least `min_attempts` tries are made.
        """
        budget = max(self.max_attempts, min_attempts)
        last: _Transient | None = None
        for attempt in range(1, budget + 1):
            self._local.attempts = self.attempts + 1
            self._pacer.acquire()
            try:
                return self._attempt(
                    method, path, credentials, expect_json, params, data, headers, answer_check
                )
            except _Transient as exc:
                last = exc
                if attempt == budget:
                    break
                self.stats.count_retry(exc.reason)
                delay = self.backoff(attempt)
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
        credentials: Callable[[], Mapping[str, str]] | None,
        expect_json: bool,
        params: dict[str, Any] | None,
        data: str | None,
        headers: dict[str, str] | None,
        answer_check: AnswerCheck | None = None,
    ) -> Any:
        request_headers = dict(headers or {})
        if credentials is not None:
            request_headers.update(credentials())
        self.stats.count_request()
        # Ticketed calls (the details and list pages: nearly all of them) skip requests'
        # per-call work (merging settings, hooks, cookies, preparing, redirects), which was
        # about half of the client's CPU per order; logins, a proxy, cookies the service set
        # and redirects keep the session's full handling.
        sent = None
        if credentials is not None and data is None and self._direct and not self._session.cookies:
            sent = self._send_direct(method, path, params, request_headers)
        if sent is None:
            sent = self._send_session(method, path, params, data, request_headers)
        status, response_headers, raw = sent
        self._local.body = raw
        # JSON is UTF-8 (RFC 8259) whatever the Content-Type says: servers label it text/html
        # or text/plain without a charset, which HTTP would read as ISO-8859-1.
        try:
            text = raw.decode("utf-8-sig")
            utf8 = True
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            utf8 = False
        body: Any = None
        parsed = False
        if utf8 and (expect_json or status >= 400):
            try:
                body = json.loads(text, parse_constant=_reject_constant)
                parsed = True
            except ValueError:
                body = None
        if credentials is not None:
            verdict = (answer_check or self._answer_check)(status, body)
            if verdict is not None and verdict.startswith(RETRY_PREFIX):
                raise _Transient(verdict[len(RETRY_PREFIX) :], self.excerpt(text), status)
            if verdict is not None:
                raise CredentialsRejected(status, verdict, body)
        if status in TRANSIENT_STATUSES:
            transient = _Transient(
                "rate_limited" if status == 429 else f"http_{status}",
                self.excerpt(text),
                status,
            )
            transient.retry_after = parse_retry_after(response_headers.get("Retry-After"))
            raise transient
        if status >= 400:
            raise BuffaloApiError("http_error", path, self.excerpt(text), status=status)
        if not expect_json:
            return text
        if not utf8:
            raise _Transient("invalid_json", f"body is not UTF-8: {self.excerpt(text)}", status)
        if not parsed:
            raise _Transient("invalid_json", f"body is not JSON: {self.excerpt(text)}", status)
        return body

    def _send_session(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        data: str | None,
        headers: dict[str, str],
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Status, headers and body through the requests session (redirects, cookies, proxies)."""
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
                stream=True,
            )
            try:
                raw = self._read_capped(
                    response.headers, response.iter_content(64 * 1024), response.status_code, path
                )
            finally:
                response.close()
        except requests.exceptions.SSLError as exc:
            raise BuffaloApiError("tls_error", path, self.scrub(str(exc))[:300]) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            raise _Transient(reason, type(exc).__name__) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Transient("truncated_body", type(exc).__name__) from None
        except requests.exceptions.ContentDecodingError as exc:
            raise _Transient("bad_encoding", type(exc).__name__) from None
        return response.status_code, response.headers, raw

    def _connection_pool(self) -> Any:
        """The base URL's urllib3 pool, as the session's adapter sets it up (TLS included)."""
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    probe = requests.Request("GET", self.base_url + "/").prepare()
                    verify = self._session.verify if self._session.verify is not None else True
                    pool = self._adapter.get_connection_with_tls_context(probe, verify)
                    self._adapter.cert_verify(pool, self.base_url, verify, None)
                    self._pool = pool
                pool = self._pool
        return pool

    def _send_direct(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> tuple[int, Mapping[str, str], bytes] | None:
        """Status, headers and body from the session's own urllib3 pool, with what requests
        would send (its default headers, ours, the call's) and its failure classes; None when
        the answer needs the session (a redirect, or cookies to keep): it is sent again there.
        """
        url = self._path_prefix + path
        if params:
            url += "?" + urlencode(params, doseq=True)
        all_headers = dict(self._session.headers)
        all_headers.update(headers)
        try:
            pool = self._connection_pool()
            response = pool.urlopen(
                method,
                url,
                headers=all_headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=self._adapter.max_retries,
                timeout=self._timeout,
            )
        except ClosedPoolError:
            self._pool = None
            raise _Transient("connection_error", "ConnectionError") from None
        except MaxRetryError as exc:
            if isinstance(exc.reason, SSLError):
                raise BuffaloApiError("tls_error", path, self.scrub(str(exc))[:300]) from None
            if isinstance(exc.reason, Urllib3ConnectTimeout) and not isinstance(
                exc.reason, NewConnectionError
            ):
                raise _Transient("timeout", "ConnectTimeout") from None
            raise _Transient("connection_error", "ConnectionError") from None
        except SSLError as exc:
            raise BuffaloApiError("tls_error", path, self.scrub(str(exc))[:300]) from None
        except ReadTimeoutError:
            raise _Transient("timeout", "ReadTimeout") from None
        except (ProtocolError, OSError):
            raise _Transient("connection_error", "ConnectionError") from None
        complete = False
        try:
            if response.get_redirect_location() or "Set-Cookie" in response.headers:
                return None
            try:
                raw = self._read_capped(
                    response.headers, response.stream(64 * 1024, decode_content=True),
                    response.status, path,
                )  # fmt: skip
            except ProtocolError:
                raise _Transient("truncated_body", "ChunkedEncodingError") from None
            except DecodeError:
                raise _Transient("bad_encoding", "ContentDecodingError") from None
            except ReadTimeoutError:
                raise _Transient("connection_error", "ConnectionError") from None
            except SSLError as exc:
                raise BuffaloApiError("tls_error", path, self.scrub(str(exc))[:300]) from None
            complete = True
        finally:
            if not complete:  # a connection with unread bytes is never reused (as requests does)
                response.close()
            response.release_conn()
        return response.status, response.headers, raw

    def _read_capped(
        self, headers: Mapping[str, str], chunks_in: Iterable[bytes], status: int, path: str
    ) -> bytes:
        declared = headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise BuffaloApiError(
                "too_large",
                path,
                f"response of {int(declared)} bytes exceeds the {self.max_response_bytes}-byte cap",
                status=status,
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in chunks_in:
            size += len(chunk)
            if size > self.max_response_bytes:
                raise BuffaloApiError(
                    "too_large",
                    path,
                    f"response exceeds the {self.max_response_bytes}-byte cap",
                    status=status,
                )
            chunks.append(chunk)
        return b"".join(chunks)
