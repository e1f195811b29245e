"""The demo's two Dagster runs, in the child process `buffalo demo` starts (not a user command).

Runs job `refresh_all` on the instance in `--instance`, moves the sandbox clock on by
`--advance-days`, runs it again, and prints what each run did from its materializations'
metadata and its checks. Everything else comes from the environment `buffalo demo` hands
over (`dev.dagster_environment`: the demo's database, `.env`'s entries, the sandbox account),
as for every Dagster process: the resources' `EnvVar`s are resolved from it when a run
starts, so no secret reaches run config, logs or metadata. Exits 1, naming the run, when a
run fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from buffalo_assets.cli._common import figure
from buffalo_assets.settings import analytics_as_of

# The demo prints its own summary (the gate's verdict included); Dagster's console logger
# only reports errors.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@click.command()
@click.option("--instance", "home", required=True, help="The Dagster instance folder (DAGSTER_HOME)")
@click.option("--sandbox", "sandbox_url", required=True, help="The demo's sandbox, whose clock moves")
@click.option("--advance-days", type=float, required=True, help="Sandbox days between the two runs")
def runs(home: str, sandbox_url: str, advance_days: float) -> None:
    """Job refresh_all, the sandbox clock moved on, job refresh_all again; one summary per run."""
    from dagster import DagsterInstance

    from buffalo_assets.definitions import defs
    from buffalo_assets.operations.runs import release_dead_runs
    from buffalo_assets.sandbox.control import SandboxControl

    job = defs.resolve_job_def("refresh_all")
    with DagsterInstance.from_config(home) as instance:
        release_dead_runs(instance)
        click.echo(f"dagster    instance {home}, job refresh_all")
        # The world's clock starts a day behind (so that after moving on it is now, and no
        # event is dated in the future): the first run's analytics look at the world as of
        # its own clock, as a user replaying that day would (BUFFALO_ANALYTICS_AS_OF).
        clock = SandboxControl(sandbox_url).status()["now"]
        with analytics_as_of(datetime.fromtimestamp(float(clock), UTC).isoformat()):
            first = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        _report_run("run 1", first)
        moved = SandboxControl(sandbox_url).advance(days=advance_days)
        click.echo(f"clock      +{advance_days:g} day(s): {moved['new_orders']} new orders arrived")
        _report_run(
            "run 2", job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        )


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
    gate = next((e for e in evaluations if e.check_name == "delay_model_gate"), None)
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
            f"AUC {figure(model.get('model_auc'))} vs baseline {figure(model.get('baseline_auc'))}, "
            f"AP {figure(model.get('model_ap'))} vs {figure(model.get('baseline_ap'))}"
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
    """The delay model gate's verdict in a run: passed, failed or not judged (with its severity)."""
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


if __name__ == "__main__":
    runs()
