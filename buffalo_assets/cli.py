"""The `buffalo` command: the demo, the sandbox, the database and the Dagster UI."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


@click.group()
def main() -> None:
    """Buffalo Orders Platform: Buffalo shipping history in PostgreSQL, as Dagster assets."""


# -- sandbox -----------------------------------------------------------------------------


def sandbox_options(command: Callable[..., None]) -> Callable[..., None]:
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
        click.option(
            "--delay-process",
            type=click.Choice(DELAY_PROCESSES),
            default="customs",
            show_default=True,
            help="How journeys run late: customs (weekly customs congestion, inspections, unpaid "
            "duty), backlog (origin backlog, transshipments, courier disruptions; other texts) or "
            "chance (nothing predicts it)",
        ),
        click.option(
            "--event-texts",
            "event_language",
            type=click.Choice(LANGUAGES),
            default="en",
            show_default=True,
            help="Language of the tracking events' texts (zh: Chinese, with --delay-process backlog)",
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


# -- settings ------------------------------------------------------------------------------


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's settings table instead")
def show_settings(markdown: bool) -> None:
    """Print every setting with the value in use (secrets masked) and where it came from."""
    if markdown:
        click.echo(settings.markdown_table(), nl=False)
        return
    current = settings.load()
    explicit = current.model_fields_set
    for name in settings.Settings.model_fields:
        value = getattr(current, name)
        shown = "unset" if value is None else ("********" if "Secret" in type(value).__name__ else str(value))
        source = "set" if name in explicit else "default"
        click.echo(f"{settings.env_name(name):34} {shown:40} ({source})")
    found = "read" if current.env_file.exists() else "none found"
    click.echo(f"{'(.env file)':34} {current.env_file} ({found})")
    exposed = settings.env_file_warning(current.env_file)
    if exposed:
        click.echo(f"warning: {exposed}", err=True)


# -- check ---------------------------------------------------------------------------------


@main.command()
def check() -> None:
    """Check the settings and the Buffalo account: log in, list one page, fetch one order.

    Prints what it found (counts, one order's id and status; no personal data, never the
    password or the ticket) and stores nothing. Exits 1 with a one-line reason when a setting
    is missing or wrong, the login is refused or the API cannot be reached.
    """
    from buffalo_assets.buffalo.check import CheckFailed, load_settings, run_check

    def echo(label: str, what: str) -> None:
        click.echo(f"{label:10} {what}")

    try:
        run_check(echo, load_settings(), database=lambda current: _check_database(current.pg_url))
    except CheckFailed as failed:
        raise click.ClickException(str(failed)) from None


def _check_database(pg_url: str | None) -> str:
    """Whether BUFFALO_PG_URL answers (a `SELECT 1`, nothing written); the embedded server is not started."""
    if not pg_url:
        return "BUFFALO_PG_URL unset: the embedded PostgreSQL (`buffalo dev` and `buffalo db url` start it)"
    import sqlalchemy as sa

    from buffalo_assets.buffalo.check import CheckFailed
    from buffalo_assets.storage.database import normalize_url, ping, safe_url

    try:
        url = normalize_url(pg_url)
    except Exception as exc:  # noqa: BLE001 - any unparsable URL is a wrong setting
        raise CheckFailed(f"BUFFALO_PG_URL is not a database URL ({type(exc).__name__})") from None
    try:
        ping(url, timeout_s=5)
    except sa.exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
        raise CheckFailed(f"BUFFALO_PG_URL {safe_url(url)} does not answer: {reason}") from None
    return f"BUFFALO_PG_URL {safe_url(url)} answers"


# -- database ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The PostgreSQL database (BUFFALO_PG_URL, or the embedded server)."""


@db.command("url")
def db_url() -> None:
    """Print the database URL in use, starting the embedded server if needed."""
    from buffalo_assets.storage.database import database_url

    click.echo(database_url())


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the raw, core, analytics and ops schemas to the newest migration (or create them)."""
    from buffalo_assets.storage.database import create_engine, database_url
    from buffalo_assets.storage.migrations import SchemaVersionError, upgrade

    engine = create_engine(database_url())
    try:
        click.echo(upgrade(engine).describe())
    except SchemaVersionError as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()


@db.command("init")
@click.pass_context
def db_init(ctx: click.Context) -> None:
    """The same as `buffalo db upgrade` (its name before schema migrations)."""
    click.echo("`buffalo db init` is the same as `buffalo db upgrade`")
    ctx.invoke(db_upgrade)


@db.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes, e.g. 'add orders.vat'")
def db_revision(message: str) -> None:
    """Write a migration for the changes in storage/tables.py (Alembic autogenerate).

    Compares tables.py with a scratch database upgraded to the current head (created on the
    server of BUFFALO_PG_URL or the embedded one, dropped after), so no real database is read.
    Review the file it writes, then commit it with the change to tables.py.
    """
    import importlib.util
    import uuid

    from alembic import command

    from buffalo_assets.storage.database import create_engine, database_url, drop_database, recreate_database
    from buffalo_assets.storage.migrations import (
        alembic_config,
        next_revision_id,
        schema_differences,
        upgrade,
    )

    server_url = database_url()
    scratch = f"buffalo_revision_{uuid.uuid4().hex[:8]}"
    engine = create_engine(recreate_database(server_url, scratch))
    try:
        upgrade(engine)
        with engine.begin() as connection:
            if not schema_differences(connection):
                click.echo("storage/tables.py matches the migration head: no migration written")
                return
            config = alembic_config(connection)
            if importlib.util.find_spec("ruff") is not None:  # a dev dependency: format when present
                config.set_section_option("post_write_hooks", "hooks", "format, fix")
                for hook, options in (("format", "format"), ("fix", "check --fix --quiet")):
                    config.set_section_option("post_write_hooks", f"{hook}.type", "exec")
                    config.set_section_option("post_write_hooks", f"{hook}.executable", sys.executable)
                    config.set_section_option(
                        "post_write_hooks", f"{hook}.options", f"-m ruff {options} REVISION_SCRIPT_FILENAME"
                    )
            script = command.revision(config, message=message, autogenerate=True, rev_id=next_revision_id())
    finally:
        engine.dispose()
        drop_database(server_url, scratch)
    scripts = script if isinstance(script, list) else [script]
    for written in scripts:
        if written is not None:
            click.echo(f"wrote {written.path}: review it, then commit it with the change to tables.py")


@db.command("grant-bi")
@click.option("--role", default="buffalo_bi", show_default=True, help="Name of the read-only role")
def db_grant_bi(role: str) -> None:
    """Create the read-only BI role: reads the analytics.bi_* views, nothing else.

    Its password is BUFFALO_BI_PASSWORD; run it again after an upgrade that adds views.
    """
    from buffalo_assets.storage.database import create_engine, database_url, safe_url
    from buffalo_assets.storage.migrations import upgrade
    from buffalo_assets.storage.roles import grant_bi_role

    url = database_url()
    engine = create_engine(url)
    upgrade(engine)
    secret = settings.load().bi_password
    password = secret.get_secret_value() if secret else None
    views = grant_bi_role(engine, role, password)
    engine.dispose()
    login = "can log in" if password else "no login (set BUFFALO_BI_PASSWORD to allow one)"
    click.echo(
        f"role {role} reads the {len(views)} views analytics.bi_* only in {safe_url(url)}; {login}\n"
        f"views: {', '.join(views) or '(none: run `buffalo db upgrade`)'}"
    )


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server, if it runs."""
    from buffalo_assets.storage.database import embedded_server

    server = embedded_server()
    stopped = server.stop()
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
    for change in server.root_changes() if stopped else []:
        # Undoing them could break another checkout's server; say what stays instead.
        click.echo(f"left in place (made when set up as root): {change}")


# -- stock ---------------------------------------------------------------------------------

MAX_PROBLEMS_SHOWN = 50


@main.group()
def stock() -> None:
    """Solo's own stock levels, for the `stock_cover` asset."""


@stock.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def stock_import(file: Path) -> None:
    """Load a stock CSV (goods,on_hand,daily_sales,as_of) into ops.stock_levels, replacing it all.

    Every row is checked first; with any bad value nothing is loaded, every problem is
    listed by line and column, and the stock list loaded before stays as it was. A good
    file replaces the whole list in one transaction (an item missing from the file is
    removed). `stock_cover` uses it from its next materialization.
    """
    from buffalo_assets.analytics.stock import StockFileError, parse_stock_levels, today_sast
    from buffalo_assets.storage.database import database_url
    from buffalo_assets.storage.resource import engine_for
    from buffalo_assets.storage.stock_store import count_stock_levels, replace_stock_levels

    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise click.ClickException(f"{file}: not UTF-8 text (byte {error.start}); nothing imported") from None
    engine = engine_for(database_url())
    before = count_stock_levels(engine)
    try:
        levels = parse_stock_levels(text, today_sast(), source=file.name)
    except StockFileError as error:
        shown = [f"  {problem}" for problem in error.problems[:MAX_PROBLEMS_SHOWN]]
        if len(error.problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"  ... and {len(error.problems) - MAX_PROBLEMS_SHOWN} more")
        raise click.ClickException(
            f"{file}: {len(error.problems)} problem(s), nothing imported "
            f"(ops.stock_levels keeps its {before} earlier rows):\n" + "\n".join(shown)
        ) from None
    imported_at = datetime.now(UTC)
    rows = [
        {str(k): v for k, v in row.items()} | {"imported_at": imported_at}
        for row in levels.to_dict("records")
    ]
    replaced = replace_stock_levels(engine, rows)  # never empty: parse refuses a file without rows
    click.echo(
        f"imported {len(rows)} stock levels from {file.name} into ops.stock_levels "
        f"(replacing {replaced} earlier rows); asset stock_cover uses them from its next run"
    )


# -- demo --------------------------------------------------------------------------------


@main.command()
@click.option("--orders", default=2_000, show_default=True, help="Orders in the demo sandbox")
@click.option("--advance-days", default=1.0, show_default=True, help="Sandbox days between the two runs")
@click.option("--seed", default=7, show_default=True, help="Seed of the sandbox's orders")
@click.option(
    "--delay-process",
    type=click.Choice(DELAY_PROCESSES),
    default="customs",
    show_default=True,
    help="How the sandbox's journeys run late (as `buffalo sandbox --delay-process`)",
)
@click.option(
    "--event-texts",
    "event_language",
    type=click.Choice(LANGUAGES),
    default="en",
    show_default=True,
    help="Language of the tracking texts (zh: with --delay-process backlog)",
)
def demo(orders: int, advance_days: float, seed: int, delay_process: str, event_language: str) -> None:
    """The main job: Postgres + sandbox, ingest through Dagster, advance the clock, ingest again."""
    from buffalo_assets.sandbox.control import SandboxControl
    from buffalo_assets.sandbox.server import running_sandbox
    from buffalo_assets.sandbox.world import SandboxWorld
    from buffalo_assets.storage.database import safe_url

    started = time.perf_counter()
    embedded = not settings.load().pg_url
    url = demo_database_url(fresh=True)
    where = "embedded server" if embedded else "the BUFFALO_PG_URL server"
    click.echo(f"database   {safe_url(url)} (recreated on {where})")
    # The sandbox clock starts in the past so that after moving it forward it is "now":
    # tracking events are never dated in the future.
    try:
        make_process(delay_process, seed, language=event_language)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--event-texts") from None
    config = SandboxConfig(
        orders=orders,
        seed=seed,
        start=time.time() - advance_days * 86_400 - 60,
        delay_process=delay_process,
        event_language=event_language,
    )
    with running_sandbox(config) as running:
        world = (
            ""
            if delay_process == "customs" and event_language == "en"
            else (f", delay process {delay_process}, texts in {event_language}")
        )
        click.echo(f"sandbox    {running.url} with {orders} orders (user {config.username}{world})")
        # The documented hand-over: the in-process Dagster run reads its EnvVars here.
        os.environ.update(
            dagster_environment(url)
            | {
                "BUFFALO_BASE_URL": running.url,
                "BUFFALO_USERNAME": config.username,
                "BUFFALO_PASSWORD": config.password,
            }
        )
        from dagster import DagsterInstance

        from buffalo_assets.definitions import defs
        from buffalo_assets.runs import release_dead_runs

        job = defs.resolve_job_def("refresh_all")
        with DagsterInstance.get() as instance:
            release_dead_runs(instance)
            click.echo(f"dagster    instance {os.environ['DAGSTER_HOME']}, job refresh_all")
            _report_run(
                "run 1", job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
            )
            moved = SandboxControl(running.url).advance(days=advance_days)
            click.echo(f"clock      +{advance_days:g} day(s): {moved['new_orders']} new orders arrived")
            _report_run(
                "run 2", job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
            )
        # `buffalo dev --demo` starts this same world again, so the UI continues the story.
        SandboxWorld.of(running.sandbox, advances=[advance_days * 86_400]).save(demo_world_path())
    _print_store_summary(url)
    _print_analytics_summary(url)
    click.echo(f"done in {time.perf_counter() - started:.1f}s; browse it with `.venv/bin/buffalo dev --demo`")


def demo_world_path() -> Path:
    """Where the demo records its sandbox world: beside its database, `.buffalo/<demo db>.sandbox.json`."""
    return settings.state_dir() / f"{settings.load().demo_db}.sandbox.json"


@contextlib.contextmanager
def demo_environment() -> Iterator[tuple[str, dict[str, str]]]:
    """The last demo's world served again, and the environment for Dagster processes browsing it.

    Yields the sandbox URL and the environment: the demo's database, the Dagster instance,
    and the Buffalo API pointed at the sandbox (its default login), so runs launched from the
    UI continue the demo's story. The sandbox stops when the block ends.
    """
    from buffalo_assets.sandbox.world import SandboxWorld, running_world

    path = demo_world_path()
    try:
        world = SandboxWorld.load(path)
    except FileNotFoundError:
        raise click.ClickException(f"no demo recorded ({path} is missing): run `buffalo demo`") from None
    except ValueError as error:
        raise click.ClickException(f"{error}: run `buffalo demo` again") from None
    with running_world(world) as running:
        config = running.sandbox.config
        env = dagster_environment(demo_database_url(fresh=False)) | {
            "BUFFALO_BASE_URL": running.url,
            "BUFFALO_USERNAME": config.username,
            "BUFFALO_PASSWORD": config.password,
        }
        # As on the plain sandbox: the ingest schedule stays off unless asked for.
        env.setdefault("BUFFALO_SCHEDULE_ENABLED", "false")
        yield running.url, env


def demo_database_url(*, fresh: bool) -> str:
    """The demo's own database (BUFFALO_DEMO_DB, default buffalo_demo) on the usual server.

    Each demo starts a new sandbox world, so it starts from an empty database; the one in
    BUFFALO_PG_URL (or the embedded default) is never touched.
    """
    from sqlalchemy.engine import make_url

    from buffalo_assets.storage.database import database_url, recreate_database

    name = settings.load().demo_db
    if fresh:
        return recreate_database(database_url(), name)
    return make_url(database_url()).set(database=name).render_as_string(hide_password=False)


# The demo prints its own summary (the gate's verdict included); Dagster's console logger
# only reports errors.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _report_run(label: str, result: Any) -> None:
    from buffalo_assets.assets.analytics import ANALYTICS_CHECKS

    if not result.success:
        raise _run_failed(label, result)
    analytics_checks = {key for check in ANALYTICS_CHECKS for key in check.check_keys}
    metadata = {
        event.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    ids, raw, clean = metadata["order_ids"], metadata["raw_orders"], metadata["clean_orders"]
    evaluations = result.get_asset_check_evaluations()
    checks = [e.passed for e in evaluations if e.asset_check_key not in analytics_checks]
    click.echo(
        f"{label:10} {ids['total']} orders ({ids['new_since_last_run']} new, "
        f"{ids['pages']} list pages); fetched {raw['fetched']}: {raw['new_versions']} new versions, "
        f"{raw['unchanged']} unchanged, {raw['failed']} failed; "
        f"{raw['elapsed_s']:.1f}s, {raw['orders_per_s']:.0f} orders/s ({result.run_id[:8]})"
    )
    click.echo(
        f"{'':10} core: {clean['orders_transformed']} orders transformed, "
        f"{clean['transform_errors']} errors; checks {sum(checks)}/{len(checks)} passed"
    )
    model = metadata.get("delay_model", {})
    gate = next((e for e in evaluations if e.asset_check_key in analytics_checks), None)
    if model:
        click.echo(f"{'':10} analytics: {_model_words(model)}; {_gate_words(gate)}")


def _model_words(model: dict[str, Any]) -> str:
    """What delay_model did in a run, from its materialization metadata."""
    champion = model.get("champion", "none")
    scoring = (
        f"champion {champion} scores" if champion != "none" else "no champion: orders in flight unscored"
    )
    if model.get("retrained"):
        figures = (
            f"AUC {_figure(model.get('model_auc'))} vs baseline {_figure(model.get('baseline_auc'))}, "
            f"AP {_figure(model.get('model_ap'))} vs {_figure(model.get('baseline_ap'))}"
        )
        outcome = {
            "champion": "promoted to champion",
            "rejected": f"rejected ({scoring})",
            "not_judged": f"not judged: too few test orders ({scoring})",
        }[model["status"]]
        return f"challenger {model['model_version']} trained in {model['train_s']:.1f}s, {outcome}; {figures}"
    if model.get("status") == "untrained":
        return f"no model: {model.get('note', 'not enough history')}"
    return f"no training (newest {model.get('model_age_hours', 0):.1f} h old); {scoring}"


def _gate_words(gate: Any) -> str:
    if gate is None:
        return "gate not run"
    if gate.passed:
        return f"{gate.check_name} passed"
    judged = gate.metadata.get("judged")
    state = "failed" if judged is not None and judged.value else "not judged"
    return f"{gate.check_name} {state} ({gate.severity.value})"


def _run_failed(label: str, result: Any) -> click.ClickException:
    failure = result.get_run_failure_event()
    return click.ClickException(f"{label} failed: {failure.message if failure else 'see the Dagster UI'}")


def _print_store_summary(url: str) -> None:
    from buffalo_assets.storage.resource import engine_for
    from buffalo_assets.storage.summaries import orders_by_stage, stored_counts

    with engine_for(url).connect() as connection:
        stored = stored_counts(connection)
        stages = orders_by_stage(connection)
    click.echo(
        f"stored     raw.order_ids {stored.order_ids}, raw.order_versions {stored.order_versions}, "
        f"ops.fetch_errors {stored.fetch_errors}"
    )
    click.echo(
        f"           core.clean_orders {stored.clean_orders}, core.order_items {stored.order_items}, "
        f"core.order_events {stored.order_events}"
    )
    click.echo("stages     " + ", ".join(f"{stage} {count}" for stage, count in stages))


def _print_analytics_summary(url: str) -> None:
    """Late share, the delay model against its baseline, orders at risk, and where the report is."""
    from buffalo_assets.storage import model_store
    from buffalo_assets.storage.resource import engine_for
    from buffalo_assets.storage.summaries import delivered_and_late, risk_counts, unsent_alerts_by_reason

    with engine_for(url).connect() as connection:
        delivered, late = delivered_and_late(connection)
        risk = risk_counts(connection)
        unsent = unsent_alerts_by_reason(connection)
        champion = model_store.champion(connection)
        newest = model_store.newest(connection)
    share = f"{late / delivered:.1%} of {delivered} delivered orders" if delivered else "no deliveries yet"
    click.echo(f"analytics  late share {share}")
    if newest is not None and (champion is None or newest.model_version != champion.model_version):
        click.echo(f"gate       newest training {newest.model_version}: {newest.note}")
    if champion is None:
        click.echo("model      no champion yet: the orders in flight are listed unscored")
    else:
        ours, base = champion.metrics.get("model", {}), champion.metrics.get("baseline", {})
        test = champion.metrics.get("test", {})
        click.echo(
            f"model      champion {champion.model_version}: AUC {_figure(ours.get('auc'))} / "
            f"AP {_figure(ours.get('ap'))} / Brier {_figure(ours.get('brier'))} vs baseline AUC "
            f"{_figure(base.get('auc'))} / AP {_figure(base.get('ap'))} / Brier {_figure(base.get('brier'))} "
            f"({test.get('orders', 0)} test orders); at risk: precision {_figure(ours.get('precision'))}, "
            f"recall {_figure(ours.get('recall'))}"
        )
    click.echo(f"at risk    {risk.at_risk} of {risk.in_flight} orders in flight ({risk.scored} scored)")
    by_reason = ", ".join(f"{reason} {count}" for reason, count in unsent) or "none"
    webhook = "BUFFALO_CUSTOMER_ALERT_WEBHOOK" if settings.load().customer_alert_webhook else "a webhook"
    click.echo(
        f"alerts     {sum(count for _, count in unsent)} customer alerts would be sent to {webhook} "
        f"({by_reason}); job send_customer_alerts sends them"
    )
    click.echo("inbound    " + _top_inbound(url))
    written = write_latest_report(url, settings.state_dir() / "reports" / "delivery-report.html")
    if written is not None:
        click.echo(f"report     {written} (or `.venv/bin/buffalo report --demo --serve`)")
    else:
        click.echo("report     none rendered yet (it follows the risk scores)")


def _top_inbound(url: str, top: int = 5) -> str:
    """Units and goods in flight (analytics.inbound_stock), and the goods with the most units."""
    from buffalo_assets.storage.resource import engine_for
    from buffalo_assets.storage.summaries import goods_in_flight

    with engine_for(url).connect() as connection:
        goods = goods_in_flight(connection)
    if not goods:
        return "no goods in flight"
    units = sum(each.units for each in goods)
    return f"{units:,.0f} units of {len(goods)} goods in flight; most: " + ", ".join(
        f"{each.name} {each.units:,.0f} (R {each.value_zar or 0:,.0f})" for each in goods[:top]
    )


def _figure(value: Any) -> str:
    """A figure for the summary; a missing one (None, NaN, not a number) as n/a."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "n/a"
    return f"{float(value):.3f}"


def write_latest_report(url: str, path: Path) -> Path | None:
    """Write the newest stored delivery report to `path`; None when none was rendered yet."""
    html = _latest_report(url)
    if html is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def _latest_report(url: str) -> str | None:
    from buffalo_assets.storage.resource import engine_for
    from buffalo_assets.storage.summaries import latest_delivery_report

    with engine_for(url).connect() as connection:
        return latest_delivery_report(connection)


@main.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write the report to (default: .buffalo/reports/delivery-report.html)",
)
@click.option("--serve", is_flag=True, help="Serve the latest report over HTTP instead, until Ctrl-C")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to serve on")
@click.option("--port", default=8766, show_default=True)
@click.option("--demo", "use_demo", is_flag=True, help="The report of the last `buffalo demo`")
def report(output: Path | None, serve: bool, host: str, port: int, use_demo: bool) -> None:
    """The latest delivery report (asset `delivery_report`): written to a file, or served."""
    from buffalo_assets.storage.database import database_url

    url = demo_database_url(fresh=False) if use_demo else database_url()
    if not serve:
        path = output or settings.state_dir() / "reports" / "delivery-report.html"
        if write_latest_report(url, path) is None:
            raise click.ClickException("no delivery report yet: materialize the asset delivery_report first")
        click.echo(str(path))
        return
    if _latest_report(url) is None:
        raise click.ClickException("no delivery report yet: materialize the asset delivery_report first")
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            if self.path not in ("/", "/index.html"):
                self.send_error(404, "the report is at /")
                return
            # Read on every request, so a reload shows the report of the latest run.
            body = (_latest_report(url) or "").encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

    with ThreadingHTTPServer((host, port), Handler) as server:
        click.echo(
            f"serving the latest delivery report on http://{host}:{server.server_port}/ (Ctrl-C stops)"
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


# -- Dagster -------------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the UI binds to")
@click.option("--port", default=3000, show_default=True)
@click.option("--demo", "use_demo", is_flag=True, help="Browse the database of the last `buffalo demo`")
@click.pass_context
def dev(ctx: click.Context, host: str, port: int, use_demo: bool) -> None:
    """Run `dagster dev` (UI at 127.0.0.1:PORT, daemon included) against the same database."""
    from buffalo_assets.storage.database import database_url

    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(settings.project_dir() / "workspace.yaml"),
        "-h",
        host,
        "-p",
        str(port),
        *ctx.args,
    ]
    if not use_demo:
        env = dagster_environment(database_url())
        # Dagster's CLI loads a `.env` in its working folder over the environment; from the
        # instance folder it does not, so what this hand-over says (environment first, then
        # `.env`) is what every Dagster process and run sees.
        os.chdir(env["DAGSTER_HOME"])
        os.execvpe(command[0], command, env)  # noqa: S606 - replaces this process, no shell
    # The demo's sandbox lives in this process while Dagster runs beside it.
    import subprocess

    with demo_environment() as (sandbox_url, env):
        click.echo(
            f"sandbox    {sandbox_url}: the demo's world again (clock moved on since), "
            f"database {settings.load().demo_db}"
        )
        process = subprocess.Popen(command, env=env, cwd=env["DAGSTER_HOME"])  # see above
        try:
            code = process.wait()
        except KeyboardInterrupt:  # Ctrl-C reached dagster dev too; let it shut down
            code = process.wait()
    sys.exit(code)


@main.command("env")
@click.option("--demo", "use_demo", is_flag=True, help="The database of the last `buffalo demo`")
def show_env(use_demo: bool) -> None:
    """Print, as shell `export` lines, what `buffalo dev` gives Dagster: DAGSTER_HOME and BUFFALO_PG_URL.

    `eval "$(.venv/bin/buffalo env)"` lets Dagster's own CLI (`dagster asset materialize ...`)
    use the instance and database of `make ui`; it prepares the instance folder (a copy of
    the checkout's dagster.yaml) and starts the embedded server when BUFFALO_PG_URL is unset.
    """
    import shlex

    from buffalo_assets.storage.database import database_url

    env = dagster_environment(demo_database_url(fresh=False) if use_demo else database_url())
    for name in ("DAGSTER_HOME", "BUFFALO_PG_URL"):
        click.echo(f"export {name}={shlex.quote(env[name])}")


def dagster_environment(pg_url: str) -> dict[str, str]:
    """The environment handed to Dagster processes: ours, `.env`'s entries, the instance and database.

    This is the one place the platform passes settings on through the environment: Dagster
    resolves `EnvVar`s and `dagster.yaml`'s `env:` entries from it.
    """
    home = settings.state_dir() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = (settings.project_dir() / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(instance_yaml)
    return {
        **os.environ,
        **settings.dotenv_values_for_handover(),
        "BUFFALO_PG_URL": pg_url,
        "DAGSTER_HOME": str(home),
    }


if __name__ == "__main__":
    main()
