"""`buffalo check`: can this workstation reach the configured Buffalo account? Stores nothing.

Logs in, lists one page, fetches one order's detail and reports what it found (counts, one
order's id and status; no personal data, never the password or the ticket), and which
settings are missing or wrong. Plain Python on top of the client: no Dagster, no database
writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from buffalo_assets import settings
from buffalo_assets.buffalo.client import BuffaloApiError, BuffaloAuthError, BuffaloClient, BuffaloError
from buffalo_assets.buffalo.options import ClientOptions
from buffalo_assets.orders.vocabulary import BOXES, RECORDS, STATUS_NAME, stage_of_status, text

# A check answers within seconds: few tries and short waits (the ingest itself retries more).
CHECK_CLIENT = ClientOptions(
    concurrency=1, connect_timeout=5.0, read_timeout=20.0, max_attempts=2, backoff_base=0.2, backoff_max=1.0,
    max_retry_after=5.0,
)  # fmt: skip


class CheckFailed(Exception):
    """The check could not complete; the message is one line saying why and what to change."""


@dataclass
class CheckReport:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, what: str) -> None:
        self.lines.append((label, what))


def run_check(
    echo: Callable[[str, str], None],
    current: settings.Settings | None = None,
    database: Callable[[settings.Settings], str] | None = None,
) -> CheckReport:
    """Check the settings and the Buffalo account; `echo(label, text)` is called as it goes.

    `database` (the CLI's) checks the database setting and says what it found.

    Raises CheckFailed with a one-line reason at the first problem that stops the check.
    """
    report = CheckReport()

    def say(label: str, what: str) -> None:
        report.add(label, what)
        echo(label, what)

    if current is None:
        current = load_settings()
    env_file = current.env_file
    say("settings", f"{env_file} read" if env_file.exists() else f"no {env_file}: environment only")
    exposed = settings.env_file_warning(env_file)
    if exposed:
        say("warning", exposed)
    for renamed in settings.renamed_warnings(current):
        say("warning", renamed)
    if database is not None:
        say("database", database(current))

    if current.uses_sandbox:
        base_url, username, password = (
            settings.SANDBOX_URL,
            settings.SANDBOX_USERNAME,
            settings.SANDBOX_PASSWORD,
        )
        say("api", f"{base_url}: BUFFALO_BASE_URL is unset, so the local sandbox and its default login")
    else:
        base_url = current.base_url or ""
        username = current.username or ""
        password = current.password.get_secret_value() if current.password else ""
        missing = [
            name
            for name, value in (("BUFFALO_USERNAME", username), ("BUFFALO_PASSWORD", password))
            if not value
        ]
        if missing:
            raise CheckFailed(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                f"set {'it' if len(missing) == 1 else 'them'} in .env (see .env.example) to use {base_url}"
            )
        say("api", f"{base_url} (BUFFALO_BASE_URL)")
    if current.ca_bundle and not Path(current.ca_bundle).is_file():
        raise CheckFailed(f"BUFFALO_CA_BUNDLE is {current.ca_bundle!r}, which is not a file")
    tls = {"verify_tls": current.verify_tls, "ca_bundle": current.ca_bundle}
    options = CHECK_CLIENT.model_copy(update=tls)
    if not current.verify_tls and not current.uses_sandbox:
        say("warning", "BUFFALO_VERIFY_TLS is false: the API's certificate is not checked")

    with BuffaloClient(base_url, username, password, options) as client:
        try:
            client.login()
        except BuffaloAuthError as exc:
            raise CheckFailed(f"{_reason(exc)}; check BUFFALO_USERNAME and BUFFALO_PASSWORD") from None
        except BuffaloApiError as exc:
            status = f", HTTP {exc.status}" if exc.status else ""
            raise CheckFailed(
                f"cannot reach {base_url} ({exc.kind}{status}, {client.stats.requests} tries): "
                f"{_unreachable_hint(current)}"
            ) from None
        say("login", f"ok as {username}")
        try:
            page = next(client.iter_order_pages(), None)
        except BuffaloError as exc:
            raise CheckFailed(f"the order list of {base_url} failed: {_reason(exc)}") from None
        if page is None or not page.order_ids:
            say("orders", "the account lists no orders yet: nothing to ingest")
            return report
        total = f"{page.record_total} in the account" if page.record_total is not None else "total unknown"
        say("orders", f"{total}; page 1 lists {len(page.order_ids)}")
        order_id = page.order_ids[0]
        try:
            detail = client.fetch_detail(order_id)
        except BuffaloError as exc:
            raise CheckFailed(f"the detail of order {order_id} failed: {_reason(exc)}") from None
        say("detail", _describe(order_id, detail))
    say("ok", "the platform can ingest from this account; nothing was stored")
    return report


def load_settings() -> settings.Settings:
    """The settings, or CheckFailed naming each setting whose value is wrong (never its value)."""
    try:
        return settings.load()
    except ValidationError as exc:
        wrong = []
        for error in exc.errors():
            name = settings.env_name(str(error["loc"][0])) if error["loc"] else "a setting"
            wrong.append(f"{name}: {error['msg']}")
        raise CheckFailed("wrong settings: " + "; ".join(wrong)) from None
    except settings.SettingsConflict as conflict:
        raise CheckFailed(str(conflict)) from None


def _describe(order_id: str, detail: dict[str, Any]) -> str:
    """One order's id, status and counts: nothing personal (no address, no names, no goods)."""
    status = text(detail.get(STATUS_NAME))
    events = detail.get(RECORDS)
    boxes = detail.get(BOXES)
    count = lambda value: len(value) if isinstance(value, list) else 0  # noqa: E731
    return (
        f"order {order_id}: status {status!r} (stage {stage_of_status(status)}), "
        f"{count(events)} tracking events, {count(boxes)} boxes"
    )


def _reason(exc: Exception) -> str:
    """The error's text on one line (already scrubbed of secrets by the client)."""
    return " ".join(str(exc).split())


def _unreachable_hint(current: settings.Settings) -> str:
    if current.uses_sandbox:
        return "start the sandbox (`buffalo sandbox`) or set BUFFALO_BASE_URL"
    return "check BUFFALO_BASE_URL and the network (proxy, VPN, firewall)"
