"""Delivering the customer alerts outbox to Solo's notification service, at least once.

Plain Python (SQLAlchemy and requests, no Dagster): job `send_customer_alerts` calls it.
One alert at a time, each in its own transaction: the row is claimed with
`SELECT ... FOR UPDATE SKIP LOCKED`, POSTed with `Idempotency-Key: <alert_id>`, and its
outcome written and committed in that same transaction. So a sender run that overlaps
another skips the row the other holds, and a run killed before its commit releases the
lock and leaves the row unsent: it is POSTed again later with the same key, which the
receiver deduplicates, so each alert takes effect once. A row is marked sent only after a
2xx and never POSTed after that.

Failures: 5xx, 408, 429, timeouts and connection errors are retried by later runs with
exponential backoff (`next_attempt_at`) until `max_attempts`; a redirect, 401, 403, 404 or
405 (the webhook setting is wrong, not the alert) counts like an unreachable service; any
other 4xx (the service refuses this alert) gives up at once. Given-up rows keep
`gave_up_at` and the status (never the answer's body) in `last_error`; `resend_given_up`
puts them back in the queue (after an outage, say). The webhook URL may carry a token: it
is never logged or stored, and no error text of the HTTP library (which quotes the URL) is
kept.

Every POST is signed as Standard Webhooks prescribe (https://www.standardwebhooks.com), so
the receiver can tell our alerts from anyone else's: `webhook-id` (the alert id, the same on
every retry), `webhook-timestamp` (seconds since the epoch) and `webhook-signature`
(`v1,` + base64 of HMAC-SHA256 over `<id>.<timestamp>.<body>`, keyed with the shared secret
`BUFFALO_CUSTOMER_ALERT_SECRET`, `whsec_` + base64 of at least 24 random bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa

from buffalo_assets.buffalo.transport import parse_retry_after

MAX_RETRY_S = 6 * 3_600.0
RETRIED_STATUSES = frozenset({408, 429})
# Answers about the webhook setting rather than the alert (see post_alert).
MISCONFIGURED_STATUSES = frozenset({401, 403, 404, 405})
PAYLOAD_FIELDS = ("alert_id", "order_id", "expressnumber", "reason", "message", "detail", "created_at")
USER_AGENT = "buffalo-orders-platform customer-alerts"
# The service unreachable this many times in a row: the run stops instead of trying (and
# spending an attempt of) every other alert; the next run starts over.
STOP_AFTER_UNREACHABLE = 3

_DUE = (
    "sent_at IS NULL AND gave_up_at IS NULL "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp())"
)
CLAIM = sa.text(
    "SELECT alert_id, order_id, expressnumber, reason, message, detail, created_at, attempts "
    f"FROM analytics.customer_alerts WHERE {_DUE} AND alert_id <> ALL(CAST(:tried AS text[])) "
    "ORDER BY created_at, alert_id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
COUNT_DUE = sa.text(f"SELECT count(*) FROM analytics.customer_alerts WHERE {_DUE}")
MARK_SENT = sa.text(
    "UPDATE analytics.customer_alerts SET sent_at = clock_timestamp(), attempts = attempts + 1, "
    "last_attempt_at = :tried_at, last_error = NULL, next_attempt_at = NULL WHERE alert_id = :alert_id"
)
MARK_FAILED = sa.text(
    "UPDATE analytics.customer_alerts SET attempts = attempts + 1, last_attempt_at = :tried_at, "
    "last_error = :error, "
    "next_attempt_at = CASE WHEN :give_up THEN NULL "
    "ELSE clock_timestamp() + make_interval(secs => :wait_s) END, "
    "gave_up_at = CASE WHEN :give_up THEN clock_timestamp() END "
    "WHERE alert_id = :alert_id"
)

_GIVEN_UP = "sent_at IS NULL AND gave_up_at IS NOT NULL"
RESEND = (
    "UPDATE analytics.customer_alerts SET gave_up_at = NULL, attempts = 0, next_attempt_at = NULL "
    f"WHERE {_GIVEN_UP}"
)


@dataclass(frozen=True)
class SenderPolicy:
    timeout_s: float = 10.0
    max_attempts: int = 8
    retry_s: float = 60.0

    def wait_s(self, attempts: int, retry_after_s: float | None = None) -> float:
        """Backoff before the next try, after `attempts` failed ones (Retry-After wins if longer)."""
        wait = min(self.retry_s * 2 ** max(0, attempts - 1), MAX_RETRY_S)
        return max(wait, min(retry_after_s or 0.0, MAX_RETRY_S))


@dataclass(frozen=True)
class Outcome:
    sent: bool
    retry: bool
    error: str | None = None
    retry_after_s: float | None = None
    unreachable: bool = False


@dataclass
class SendTotals:
    """What one sender run did; counts only, no alert text or contact data."""

    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sent_by_reason: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None


def payload(row: Any) -> dict[str, Any]:
    """The JSON body of an alert (documented in docs/customer-alerts.md): no address, no name."""
    detail = row.detail if isinstance(row.detail, dict) else json.loads(row.detail)
    created: datetime = row.created_at
    return {
        "alert_id": row.alert_id,
        "order_id": row.order_id,
        "expressnumber": row.expressnumber,
        "reason": row.reason,
        "message": row.message,
        "detail": detail,
        "created_at": created.isoformat(),
    }


SECRET_PREFIX = "whsec_"  # noqa: S105 - the scheme's prefix, not a secret
MIN_SECRET_BYTES = 24


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64); a clear error if malformed.

    The message never quotes the secret.
    """
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "BUFFALO_CUSTOMER_ALERT_SECRET must be 'whsec_' followed by base64, for example "
            "'whsec_' and the output of `openssl rand -base64 32`"
        ) from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"BUFFALO_CUSTOMER_ALERT_SECRET holds {len(key)} bytes; at least {MIN_SECRET_BYTES} random bytes "
            "are needed for a signature nobody can guess"
        )
    return key


def signature_headers(key: bytes, message_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one POST of `body`."""
    timestamp = str(int(time.time() if now is None else now))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def post_alert(
    session: requests.Session, webhook: str, body: dict[str, Any], timeout_s: float, key: bytes
) -> Outcome:
    """POST one signed alert; the outcome says whether it was acknowledged and whether to retry."""
    data = json.dumps(body)
    try:
        response = session.post(
            webhook,
            data=data.encode(),
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": body["alert_id"],
                "User-Agent": USER_AGENT,
                **signature_headers(key, body["alert_id"], data),
            },
            timeout=timeout_s,
            allow_redirects=False,
        )
    except requests.ConnectTimeout:
        # No connection at all (a host that drops packets): as unreachable as a refused one.
        return Outcome(
            sent=False, retry=True, error=f"connect timeout after {timeout_s:g} s", unreachable=True
        )
    except requests.Timeout:
        return Outcome(sent=False, retry=True, error=f"timeout after {timeout_s:g} s")
    except requests.RequestException as exc:
        # The library's message quotes the URL (and so any token in it): the class name only.
        return Outcome(
            sent=False, retry=True, error=f"connection failed ({type(exc).__name__})", unreachable=True
        )
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(sent=True, retry=False)
    # Status and reason only: the body may echo the URL (and a token in it) or name the
    # customer, and this text reaches the row, the run's log and the Power BI view.
    error = f"HTTP {status} {response.reason or ''}".rstrip()
    if status >= 500 or status in RETRIED_STATUSES:
        wait = parse_retry_after(response.headers.get("Retry-After"))
        return Outcome(sent=False, retry=True, error=error, retry_after_s=wait)
    if status < 400 or status in MISCONFIGURED_STATUSES:
        # A redirect, a refused credential or a wrong path says the webhook setting is wrong,
        # not this alert: nothing is given up, and the run stops like for an unreachable one.
        return Outcome(sent=False, retry=True, error=error, unreachable=True)
    return Outcome(sent=False, retry=False, error=error)


def check_webhook(webhook: str) -> None:
    """Refuse a webhook that is not an http(s) URL with a host, without quoting it (it may hold a token)."""
    parsed = urlsplit(webhook)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            "BUFFALO_CUSTOMER_ALERT_WEBHOOK must be an http:// or https:// URL with a host "
            f"(it has scheme {parsed.scheme or 'none'!r}); nothing was sent"
        )


def count_due(engine: sa.Engine) -> int:
    """Alerts a sender run would POST now (unsent, not given up, not waiting for a retry)."""
    with engine.connect() as connection:
        return int(connection.execute(COUNT_DUE).scalar_one())


def resend_given_up(engine: sa.Engine, *, since: datetime | None = None) -> int:
    """Put the alerts the sender gave up on back in the queue; return how many.

    `since` (timezone-aware): only those given up at or after it, e.g. since an outage of
    the notification service began; None: every given-up alert. Each gets its attempts
    back (`attempts` 0) and is due at once (`gave_up_at` and `next_attempt_at` cleared), so
    the sender's next run (its sensor ticks every minute) POSTs it again, with the same
    Idempotency-Key. `last_error` and `last_attempt_at` say what happened last until then.

    Alerts already sent are never touched. Safe while a sender runs: one UPDATE of rows
    that are given up, which a sender never claims (it locks due rows only), so neither
    waits for the other; a row put back here is due for a running sender too.
    """
    if since is not None and since.utcoffset() is None:
        raise ValueError("since must be timezone-aware (a naive time would be read in the server's zone)")
    statement = RESEND if since is None else f"{RESEND} AND gave_up_at >= :since"
    with engine.begin() as connection:
        return int(connection.execute(sa.text(statement), {"since": since}).rowcount)


def send_due_alerts(
    engine: sa.Engine,
    webhook: str,
    policy: SenderPolicy,
    secret: str,
    *,
    limit: int | None = None,
    report: Callable[[str], None] | None = None,
) -> SendTotals:
    """POST every due alert once (at most `limit`), signed with `secret`, a row and transaction at a time."""
    check_webhook(webhook)
    key = signing_key(secret)
    totals = SendTotals()
    tried: list[str] = []
    unreachable = 0
    with requests.Session() as session:
        while limit is None or len(tried) < limit:
            with engine.connect() as connection, connection.begin():
                row = connection.execute(CLAIM, {"tried": tried}).first()
                if row is None:
                    break
                tried.append(row.alert_id)
                tried_at = connection.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
                outcome = post_alert(session, webhook, payload(row), policy.timeout_s, key)
                if outcome.sent:
                    connection.execute(MARK_SENT, {"alert_id": row.alert_id, "tried_at": tried_at})
                else:
                    attempts = int(row.attempts) + 1
                    give_up = not outcome.retry or attempts >= policy.max_attempts
                    wait_s = policy.wait_s(attempts, outcome.retry_after_s)
                    connection.execute(
                        MARK_FAILED,
                        {
                            "alert_id": row.alert_id,
                            "tried_at": tried_at,
                            "error": outcome.error,
                            "give_up": give_up,
                            "wait_s": wait_s,
                        },
                    )
            # Committed: only now does the run count it.
            if outcome.sent:
                unreachable = 0
                totals.sent += 1
                totals.sent_by_reason[row.reason] += 1
                continue
            totals.errors[str(outcome.error).split(":")[0]] += 1
            if give_up:
                totals.gave_up += 1
                what = "refused" if not outcome.retry else f"failed {attempts} times"
                message = f"alert {row.alert_id} {what}: {outcome.error}; given up"
            else:
                totals.failed += 1
                message = (
                    f"alert {row.alert_id}: {outcome.error} (attempt {attempts} of "
                    f"{policy.max_attempts}); retried in {wait_s:g} s or later"
                )
            if report is not None:
                report(message)
            unreachable = unreachable + 1 if outcome.unreachable else 0
            if unreachable >= STOP_AFTER_UNREACHABLE:
                totals.stopped = (
                    f"the webhook was unreachable or misconfigured {unreachable} times in a row "
                    f"(last: {outcome.error}); the next run tries again"
                )
                if report is not None:
                    report(totals.stopped)
                break
    return totals
