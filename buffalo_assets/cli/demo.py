"""`buffalo demo`, the main job: Postgres + sandbox, ingest through Dagster, advance the clock,
ingest again, then a summary of what is stored.

This process recreates the demo's database and serves the sandbox; the two Dagster runs
(`_demo_runs.py`) run in a child process handed the demo's database, instance and sandbox
account through its environment (`dev.dagster_environment`), as every Dagster process is.
The summary afterwards reads the stored tables through `storage/summaries.py`.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from buffalo_assets import settings
from buffalo_assets.cli._common import demo_database_url, demo_world_path, figure, run_child
from buffalo_assets.cli.dev import dagster_environment
from buffalo_assets.cli.sandbox import DELAY_PROCESS_OPTION, EVENT_TEXTS_OPTION
from buffalo_assets.sandbox.app import SandboxConfig
from buffalo_assets.sandbox.journeys import make_process

if TYPE_CHECKING:
    import sqlalchemy as sa


@click.command()
@click.option("--orders", default=2_000, show_default=True, help="Orders in the demo sandbox")
@click.option("--advance-days", default=1.0, show_default=True, help="Sandbox days between the two runs")
@click.option("--seed", default=7, show_default=True, help="Seed of the sandbox's orders")
@DELAY_PROCESS_OPTION
@EVENT_TEXTS_OPTION
@click.pass_context
def demo(
    ctx: click.Context, orders: int, advance_days: float, seed: int, delay_process: str, event_language: str
) -> None:
    """The main job: Postgres + sandbox, ingest through Dagster, advance the clock, ingest again."""
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
        # The documented hand-over: the Dagster runs read their EnvVars from this environment.
        # Only what is no secret goes on the command line (other users may list it).
        env = dagster_environment(url) | {
            "BUFFALO_BASE_URL": running.url,
            "BUFFALO_USERNAME": config.username,
            "BUFFALO_PASSWORD": config.password,
        }
        runs = [
            sys.executable, "-m", "buffalo_assets.cli._demo_runs", f"--instance={env['DAGSTER_HOME']}",
            f"--sandbox={running.url}", f"--advance-days={advance_days!r}",
        ]  # fmt: skip
        code = run_child(runs, env=env)
        if code:  # the runs said why (a failed run, Ctrl-C)
            ctx.exit(code)
        # `buffalo dev --demo` starts this same world again, so the UI continues the story.
        SandboxWorld.of(running.sandbox, advances=[advance_days * 86_400]).save(demo_world_path())
    _print_summaries(url)
    click.echo(f"done in {time.perf_counter() - started:.1f}s; browse it with `.venv/bin/buffalo dev --demo`")


def _print_summaries(url: str) -> None:
    """What the two runs stored, then the analytics in brief and where the report was written."""
    from buffalo_assets.storage.database import create_engine

    # The runs brought the schema to the migration head: no upgrade (nor Dagster) needed here.
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _print_store_summary(connection)
            _print_analytics_summary(connection)
        _print_report(engine)
    finally:
        engine.dispose()


def _print_store_summary(connection: sa.Connection) -> None:
    from buffalo_assets.storage.summaries import orders_by_stage, stored_counts

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


def _print_analytics_summary(connection: sa.Connection) -> None:
    """Late share, the delay model against its baseline, orders at risk, alerts and goods in flight."""
    from buffalo_assets.storage import model_store
    from buffalo_assets.storage.summaries import (
        delivered_and_late,
        drifted_features,
        risk_counts,
        unsent_alerts_by_reason,
        worklist_top,
    )

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
            f"model      champion {champion.model_version}: AUC {figure(ours.get('auc'))} / "
            f"AP {figure(ours.get('ap'))} / Brier {figure(ours.get('brier'))} vs baseline AUC "
            f"{figure(base.get('auc'))} / AP {figure(base.get('ap'))} / Brier {figure(base.get('brier'))} "
            f"({test.get('orders', 0)} test orders); at risk: precision {figure(ours.get('precision'))}, "
            f"recall {figure(ours.get('recall'))}"
        )
    click.echo(f"at risk    {risk.at_risk} of {risk.in_flight} orders in flight ({risk.scored} scored)")
    top = worklist_top(connection)
    if top is not None:
        value = (
            f"R{top.declared_value_zar:,.0f}" if top.declared_value_zar is not None else "no declared value"
        )
        click.echo(
            f"worklist   first: order {top.order_id}, p_late {top.p_late:.2f}, {value}: {top.reasons} "
            "(analytics.bi_delay_worklist)"
        )
    drifted = drifted_features(connection)
    if drifted is not None:
        click.echo(
            "drift      "
            + (f"drifted: {', '.join(drifted)}; a retraining is asked for" if drifted else "none")
        )
    by_reason = ", ".join(f"{reason} {count}" for reason, count in unsent) or "none"
    webhook = "BUFFALO_CUSTOMER_ALERT_WEBHOOK" if settings.load().customer_alert_webhook else "a webhook"
    click.echo(
        f"alerts     {sum(count for _, count in unsent)} customer alerts would be sent to {webhook} "
        f"({by_reason}); job send_customer_alerts sends them"
    )
    click.echo("inbound    " + _top_inbound(connection))


def _top_inbound(connection: sa.Connection, top: int = 5) -> str:
    """Units and goods in flight (analytics.inbound_stock), and the goods with the most units."""
    from buffalo_assets.storage.summaries import goods_in_flight

    goods = goods_in_flight(connection)
    if not goods:
        return "no goods in flight"
    units = sum(each.units for each in goods)
    return f"{units:,.0f} units of {len(goods)} goods in flight; most: " + ", ".join(
        f"{each.name} {each.units:,.0f} (R {each.value_zar or 0:,.0f})" for each in goods[:top]
    )


def _print_report(engine: sa.Engine) -> None:
    from buffalo_assets.cli.report import default_report_path, write_latest_report

    written = write_latest_report(engine, default_report_path())
    if written is not None:
        click.echo(f"report     {written} (or `.venv/bin/buffalo report --demo --serve`)")
    else:
        click.echo("report     none rendered yet (it follows the risk scores)")
