"""`buffalo sandbox`: the local Buffalo simulator, and the options that shape its world."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import click

from buffalo_assets import settings
from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.faults import (
    EXPIRY_STYLES,
    FAILURE_KINDS,
    RETRY_AFTER_FORMATS,
    SHAPES,
    FaultPlan,
    check_shapes,
)
from buffalo_assets.sandbox.journeys import DELAY_PROCESSES, LANGUAGES, make_process

# The world's delay process and tracking-text language: `buffalo sandbox` and `buffalo demo`.
DELAY_PROCESS_OPTION = click.option(
    "--delay-process",
    type=click.Choice(DELAY_PROCESSES),
    default="customs",
    show_default=True,
    help="How journeys run late: customs (weekly customs congestion, inspections, unpaid "
    "duty), backlog (origin backlog, transshipments, courier disruptions; other texts) or "
    "chance (nothing predicts it)",
)
EVENT_TEXTS_OPTION = click.option(
    "--event-texts",
    "event_language",
    type=click.Choice(LANGUAGES),
    default="en",
    show_default=True,
    help="Language of the tracking events' texts (zh: Chinese, with --delay-process backlog)",
)


def sandbox_options(command: Callable[..., None]) -> Callable[..., None]:
    """Options shared by every command that starts a sandbox."""
    options = [
        click.option("--orders", default=1_000, show_default=True, help="Orders in the account"),
        click.option("--seed", default=7, show_default=True, help="Seed of the generated orders"),
        click.option("--username", default=settings.SANDBOX_USERNAME, show_default=True),
        click.option(
            "--password",
            default=settings.SANDBOX_PASSWORD,
            help="Password the sandbox accepts (default documented in docs/sandbox.md)",
        ),
        click.option(
            "--history-days",
            default=60.0,
            show_default=True,
            help="Days over which the initial orders were created (longer: more delivered)",
        ),
        click.option(
            "--start",
            type=click.DateTime(),
            default=None,
            help="Sandbox clock start, UTC (default: now)",
        ),
        DELAY_PROCESS_OPTION,
        EVENT_TEXTS_OPTION,
        click.option(
            "--faults",
            "fault_rate",
            default=0.0,
            show_default=True,
            help=f"Share of API requests that fail, spread over: {', '.join(FAILURE_KINDS)}",
        ),
        click.option("--latency-ms", default=0.0, show_default=True, help="Added to every request"),
        click.option("--jitter-ms", default=0.0, show_default=True, help="Random extra latency"),
        click.option("--slow-ms", default=1500.0, show_default=True, help="Delay of a 'slow' fault"),
        click.option("--retry-after", default=1.0, show_default=True, help="Retry-After seconds on 429"),
        click.option("--ticket-ttl", default=0.0, show_default=True, help="Ticket lifetime, s (0: forever)"),
        click.option(
            "--envelope",
            type=click.Choice(["bare", "wrapped", "mixed"]),
            default="bare",
            show_default=True,
            help="Order detail bare or wrapped in {'data': ...}",
        ),
        click.option(
            "--variations",
            default=0.0,
            show_default=True,
            help="Share of orders served in varied shapes (--shapes): ids as text or $numberLong, "
            "numbers as text, epoch-ms times, non-ASCII text, JSON as text/html or text/plain, "
            "missing keys, unknown fields",
        ),
        click.option(
            "--missing",
            default=0.0,
            show_default=True,
            help="Share of listed orders whose detail fails for good",
        ),
        click.option(
            "--shapes",
            default=",".join(SHAPES),
            show_default=True,
            help="Comma list of the shapes a varied order (--variations) is served in",
        ),
        click.option(
            "--expiry-style",
            type=click.Choice(["mixed", *EXPIRY_STYLES]),
            default="mixed",
            show_default=True,
            help="How a rejected ticket is answered (mixed: rotate through them)",
        ),
        click.option(
            "--retry-after-format",
            type=click.Choice(["mixed", *RETRY_AFTER_FORMATS]),
            default="mixed",
            show_default=True,
            help="Retry-After of a 429 as seconds, an HTTP date, or alternating",
        ),
        click.option(
            "--lenient",
            is_flag=True,
            help="Accept requests missing the ticket header, list parameters, Referer or JSON login",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sandbox_config(
    orders: int,
    seed: int,
    username: str,
    password: str,
    history_days: float,
    start: datetime | None,
    fault_rate: float,
    latency_ms: float,
    jitter_ms: float,
    slow_ms: float,
    retry_after: float,
    ticket_ttl: float,
    envelope: str,
    variations: float,
    missing: float,
    shapes: str = ",".join(SHAPES),
    expiry_style: str = "mixed",
    retry_after_format: str = "mixed",
    lenient: bool = False,
    delay_process: str = "customs",
    event_language: str = "en",
) -> SandboxConfig:
    """The sandbox's configuration from the options; a bad --shapes or --event-texts is a usage error."""
    try:
        chosen_shapes = check_shapes(shapes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shapes") from None
    try:
        make_process(delay_process, seed, language=event_language)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--event-texts") from None
    plan = FaultPlan.mixed(
        fault_rate,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        slow_ms=slow_ms,
        retry_after_s=retry_after,
        ticket_ttl_s=ticket_ttl,
        detail_envelope=envelope,
        expiry_style=expiry_style,
        retry_after_format=retry_after_format,
    )
    return SandboxConfig(
        orders=orders,
        seed=seed,
        username=username,
        password=password,
        start=start.replace(tzinfo=UTC).timestamp() if start else None,
        history_days=history_days,
        variation_rate=variations,
        missing_rate=missing,
        faults=plan,
        strict=not lenient,
        shapes=chosen_shapes,
        delay_process=delay_process,
        event_language=event_language,
    )


@click.command()
@click.option("--host", default=settings.SANDBOX_HOST, show_default=True, help="Interface to bind")
@click.option("--port", default=settings.SANDBOX_PORT, show_default=True)
@sandbox_options
def sandbox(host: str, port: int, **options: object) -> None:
    """Serve the local Buffalo simulator (API + /_sandbox/ controls)."""
    from buffalo_assets.sandbox.server import serve_forever

    config = sandbox_config(**options)  # type: ignore[arg-type]
    click.echo(
        f"Buffalo sandbox on http://{host}:{port}: {config.orders} orders, seed {config.seed}, "
        f"user {config.username!r}"
    )
    serve_forever(config, host, port)
