"""A retrying HTTP transport for one base URL: what any call to the Buffalo API goes through.

One pooled `requests.Session`; a shared request pacer; retries with exponential backoff and
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

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
        answer_check: AnswerCheck | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.max_response_bytes = max_response_bytes
        self.stats = ClientStats()
        self._answer_check = answer_check or _reject_401_403
        self._pacer = RequestPacer(requests_per_second)
        self._local = threading.local()  # per-thread attempt count of the current unit of work
        self._secrets: set[str] = set()
        self._session = requests.Session()
        # Proxy and CA settings (HTTPS_PROXY, REQUESTS_CA_BUNDLE, ...) are resolved by
        # requests once here rather than on every request (it re-scans the environment and
        # ~/.netrc per call otherwise, which was a third of the client's CPU per order).
        resolved = self._session.merge_environment_settings(self.base_url, {}, None, verify, None)
        self._session.proxies = resolved["proxies"]
        self._session.verify = resolved["verify"]
        self._session.trust_env = False
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
        return f"RetryingTransport(base_url={self.base_url!r})"

    @property
    def verify(self) -> bool | str:
        """What TLS certificates are checked against (False: not checked)."""
        return self._session.verify if self._session.verify is not None else True

    def close(self) -> None:
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
            self._local.body = raw
        except requests.exceptions.SSLError as exc:
            raise BuffaloApiError("tls_error", path, self.scrub(str(exc))[:300]) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            raise _Transient(reason, type(exc).__name__) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Transient("truncated_body", type(exc).__name__) from None
        except requests.exceptions.ContentDecodingError as exc:
            raise _Transient("bad_encoding", type(exc).__name__) from None
        status = response.status_code
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
            transient.retry_after = _parse_retry_after(response.headers.get("Retry-After"))
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
