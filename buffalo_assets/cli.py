"""The `buffalo` command: the demo, the sandbox, the database and the Dagster UI."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import click

from buffalo_assets import settings
from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.faults import FAILURE_KINDS, FaultPlan


@click.group()
def main() -> None:
    """Buffalo Orders Platform: Buffalo shipping history in PostgreSQL, as Dagster assets."""
    settings.load_environment()


# -- sandbox -----------------------------------------------------------------------------


def sandbox_options(command: click.Command) -> click.Command:
    """Options shared by every command that starts a sandbox."""
    options = [
        click.option("--orders", default=1_000, show_default=True, help="Orders in the account"),
        click.option("--seed", default=7, show_default=True, help="Seed of the generated orders"),
        click.option("--username", default=settings.SANDBOX_USERNAME, show_default=True),
        click.option(
            "--password",
            default=settings.SANDBOX_PASSWORD,
            help="Password the sandbox accepts (default documented in the README)",
        ),
        click.option(
            "--start",
            type=click.DateTime(),
            default=None,
            help="Sandbox clock start, UTC (default: now)",
        ),
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
            help="Share of orders with numbers as strings, epoch-ms times and unknown fields",
        ),
        click.option(
            "--missing",
            default=0.0,
            show_default=True,
            help="Share of listed orders whose detail fails for good",
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
) -> SandboxConfig:
    plan = FaultPlan.mixed(
        fault_rate,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        slow_ms=slow_ms,
        retry_after_s=retry_after,
        ticket_ttl_s=ticket_ttl,
        detail_envelope=envelope,
    )
    return SandboxConfig(
        orders=orders,
        seed=seed,
        username=username,
        password=password,
        start=start.replace(tzinfo=UTC).timestamp() if start else None,
        variation_rate=variations,
        missing_rate=missing,
        faults=plan,
    )


@main.command()
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


# -- database ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The PostgreSQL database (BUFFALO_PG_URL, or the embedded server)."""


@db.command("url")
def db_url() -> None:
    """Print the database URL in use, starting the embedded server if needed."""
    from buffalo_assets.storage.database import database_url

    click.echo(database_url())


@db.command("init")
def db_init() -> None:
    """Create the raw, core, analytics and ops schemas and their tables."""
    from buffalo_assets.storage.database import create_engine, database_url, safe_url
    from buffalo_assets.storage.tables import ensure_schema

    url = database_url()
    engine = create_engine(url)
    ensure_schema(engine)
    engine.dispose()
    click.echo(f"schemas ready in {safe_url(url)}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server, if it runs."""
    from buffalo_assets.storage.database import embedded_server

    stopped = embedded_server().stop()
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


# -- demo --------------------------------------------------------------------------------


@main.command()
@click.option("--orders", default=2_000, show_default=True, help="Orders in the demo sandbox")
@click.option("--details", default=50, show_default=True, help="Order details to fetch")
def demo(orders: int, details: int) -> None:
    """The main job: Postgres + sandbox, log in, list every order, fetch details, summarise."""
    from buffalo_assets.buffalo.client import BuffaloClient, FetchedOrder
    from buffalo_assets.sandbox.server import running_sandbox
    from buffalo_assets.storage.database import create_engine, database_url, safe_url
    from buffalo_assets.storage.tables import ensure_schema

    started = time.perf_counter()
    embedded = not os.environ.get("BUFFALO_PG_URL")
    url = database_url()
    click.echo(f"database   {safe_url(url)} ({'embedded' if embedded else 'BUFFALO_PG_URL'})")
    engine = create_engine(url)
    ensure_schema(engine)
    engine.dispose()
    click.echo("schemas    raw, core, analytics, ops ready")

    config = SandboxConfig(orders=orders, username=settings.SANDBOX_USERNAME)
    with running_sandbox(config) as running:
        click.echo(f"sandbox    {running.url} with {orders} orders")
        with BuffaloClient(running.url, config.username, config.password) as client:
            client.login()
            click.echo(f"login      ok as {config.username}")
            ids = list(client.iter_order_ids())
            click.echo(f"order list {len(ids)} ids on {-(-len(ids) // 15)} pages")
            results = list(client.fetch_details(ids[:details]))
            fetched = [r for r in results if isinstance(r, FetchedOrder)]
            statuses = Counter(str(r.payload.get("statusname")) for r in fetched)
            click.echo(f"details    {len(fetched)} fetched, {len(results) - len(fetched)} failed")
            for status, count in statuses.most_common():
                click.echo(f"           {count:4d}  {status}")
            stats = client.stats.as_dict()
    click.echo(
        f"requests   {stats['requests']} made, {stats['retries']} retried; "
        f"done in {time.perf_counter() - started:.1f}s"
    )


# -- Dagster -------------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", default=3000, show_default=True)
@click.pass_context
def dev(ctx: click.Context, port: int) -> None:
    """Run `dagster dev` (UI at 127.0.0.1:PORT, daemon included) against the same database."""
    from buffalo_assets.storage.database import database_url

    env = dagster_environment(database_url())
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(settings.project_dir() / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        *ctx.args,
    ]
    os.execvpe(command[0], command, env)  # noqa: S606 - replaces this process, no shell


def dagster_environment(pg_url: str) -> dict[str, str]:
    """The environment Dagster processes need: instance config and its database."""
    home = settings.state_dir() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = (settings.project_dir() / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(instance_yaml)
    return {**os.environ, "BUFFALO_PG_URL": pg_url, "DAGSTER_HOME": str(home)}


if __name__ == "__main__":
    main()
