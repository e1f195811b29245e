"""`buffalo dev` and `buffalo env`: Dagster's own processes, and what they are handed.

Dagster resolves the platform's `EnvVar`s and `dagster.yaml`'s `env:` entries from the
environment of its processes, so the settings reach them there: `dagster_environment` is the
one place that builds that environment (this process's, `.env`'s entries, the instance and
the database), and `demo_environment` adds the replayed demo world for `buffalo dev --demo`.
Each Dagster process is started with it explicitly (`env=`); this process's own environment
and working folder are left as they are.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click

from buffalo_assets import settings
from buffalo_assets.cli._common import demo_database_url, demo_world_path, run_child


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
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
    # Dagster's CLI loads a `.env` in its working folder over the environment; from the
    # instance folder it does not, so what this hand-over says (environment first, then
    # `.env`) is what every Dagster process and run sees.
    if not use_demo:
        env = dagster_environment(database_url())
        ctx.exit(run_child(command, env=env, cwd=env["DAGSTER_HOME"]))
    # The demo's sandbox lives in this process while Dagster runs beside it.
    with demo_environment() as (sandbox_url, env):
        click.echo(
            f"sandbox    {sandbox_url}: the demo's world again (clock moved on since), "
            f"database {settings.load().demo_db}"
        )
        code = run_child(command, env=env, cwd=env["DAGSTER_HOME"])
    ctx.exit(code)


@click.command("env")
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
    resolves `EnvVar`s and `dagster.yaml`'s `env:` entries from it. It prepares the instance
    folder (DAGSTER_HOME, a copy of the checkout's dagster.yaml); it changes nothing in this
    process.
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
        # As on the plain sandbox: the ingest schedule stays off unless asked for.
        env = {"BUFFALO_SCHEDULE_ENABLED": "false"} | dagster_environment(demo_database_url(fresh=False))
        env |= {
            "BUFFALO_BASE_URL": running.url,
            "BUFFALO_USERNAME": config.username,
            "BUFFALO_PASSWORD": config.password,
        }
        yield running.url, env
