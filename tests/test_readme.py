"""Every fenced shell command of the README works as written from a fresh checkout.

Each command of a ```bash block is either run here (from a copy of the checkout's tracked
files, as a new user would run it), parsed here (servers: their options must exist), or
named with the test that runs it or the reason it cannot run on this machine. A new command
in the README fails `test_every_readme_command_is_run_or_accounted_for` until it is listed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import sqlalchemy as sa

from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import ROOT, SandboxFactory

README = ROOT / "README.md"

# Run here, in a copy of the checkout (see `checkout`), in README order within each block.
RUN = {
    "cp .env.example .env",
    "chmod 600 .env",
    ".venv/bin/buffalo settings",
    ".venv/bin/buffalo check",
    'eval "$(.venv/bin/buffalo env)"',
    ".venv/bin/dagster asset materialize -m buffalo_assets.definitions --select order_ids,raw_orders",
}
# Servers that run until stopped: their options are parsed here (`buffalo ...`), the make
# targets checked with `make -n`, and their behaviour is run by the test named.
SANDBOX_WITH_FAULTS = (
    ".venv/bin/buffalo sandbox --port 8765 --orders 5000 --seed 7 --faults 0.1 --latency-ms 20 "
    "--jitter-ms 10 --ticket-ttl 300 --envelope mixed --variations 0.3 --missing 0.01"
)
SERVERS = {
    "make ui": "`buffalo dev`: its environment is `buffalo env`'s (run here); webserver and daemon: "
    "tests/test_stack.py::test_the_daemon_runs_the_schedule_and_automation_brings_core_up_to_date",
    ".venv/bin/buffalo sandbox": (
        "tests/test_load.py::test_a_100000_order_account_with_10_percent_faults_ingests_completely"
    ),
    ".venv/bin/buffalo sandbox &": "the same, in the background",
    SANDBOX_WITH_FAULTS: "the same, with every fault option",
    "make airflow": (
        "tests/test_airflow.py::test_scheduler_and_triggerer_run_a_triggered_dag_run_waiting_deferred"
    ),
}
AIRFLOW_CONN_JSON = (
    'AIRFLOW_CONN_DAGSTER_DEFAULT=\'{"conn_type": "http", "host": "https://dagster.example.com", '
    '"password": "TOKEN", "extra": {"token_header": "Dagster-Cloud-Api-Token", '
    '"ca_bundle": "/etc/ssl/corp.pem"}}\''
)
BENCHMARK = "a benchmark (minutes), not a test"
# Not run by this file: the test that runs it, or why it cannot run here.
ELSEWHERE = {
    "make demo": "runs `buffalo demo`: "
    "tests/test_project.py::test_the_main_job_ingests_through_dagster_twice_and_summarises",
    "make test": "the suite itself (CI's .ci/run)",
    "make install": "installs into .venv; the suite's .venv is that install (CI's .ci/run makes it)",
    ".venv/bin/buffalo stock import stock.csv": "runs through click's runner: "
    "tests/test_stock.py::test_stock_import_loads_a_good_file_and_a_new_file_replaces_the_list",
    "make airflow-dag-test": "`airflow dags test`: "
    "tests/test_airflow.py::test_the_dag_materializes_both_assets_in_dagster_and_fails_with_dagsters_error",
    "AIRFLOW_CONN_DAGSTER_DEFAULT='http://webserver:3000'": "a value of Airflow's connection, not a command",
    "AIRFLOW_CONN_DAGSTER_DEFAULT='https://:TOKEN@dagster.example.com'": "the same",
    AIRFLOW_CONN_JSON: "the same",
    ".venv/bin/python -m bench.ingest --orders 2000 --latency-ms 50 --concurrency 16": BENCHMARK,
    ".venv/bin/python -m bench.ingest --orders 10000 --history-days 210 --skip-baseline": BENCHMARK,
    ".venv/bin/python -m bench.ingest --orders 100000 --skip-baseline": BENCHMARK,
    "make bench-venv": "installs dlt, the benchmark's peer, into bench/.venv-dlt (minutes of pip)",
    ".venv/bin/python -m bench.e2e": BENCHMARK,
    ".venv/bin/python -m bench.e2e --orders 100000 --latency-ms 20 --skip-baseline --skip-dlt "
    "--repeat 1": BENCHMARK,
}


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` inside quotes or a word is kept)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _balanced(text: str) -> bool:
    quote = None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
    return quote is None


SHELL = ("bash", "sh", "shell")


def readme_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block: comments dropped, continued and quoted lines joined."""
    blocks: list[list[str]] = []
    language: str | None = None  # inside a fence: its language ("" when none)
    commands: list[str] = []
    pending = ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence:
            if language is None:
                language, commands, pending = fence.group(1), [], ""
            else:
                if language in SHELL and commands:
                    blocks.append(commands)
                language = None
            continue
        if language not in SHELL:
            continue
        if not pending and line.strip().startswith("#"):
            continue  # a comment line
        pending = _strip_comment(f"{pending} {line.strip()}" if pending else line.strip())
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if not _balanced(pending):
            continue
        command = " ".join(pending.split())
        pending = ""
        if command:
            commands.append(command)
    return blocks


def readme_commands() -> list[list[str]]:
    return readme_blocks(README.read_text())


def test_every_readme_command_is_run_or_accounted_for() -> None:
    found = [command for block in readme_commands() for command in block]
    listed = RUN | set(SERVERS) | set(ELSEWHERE)
    unaccounted = [command for command in found if command not in listed]
    assert not unaccounted, (
        f"README commands neither run here nor listed in tests/test_readme.py: {unaccounted}"
    )
    stale = listed - set(found)
    assert not stale, f"listed in tests/test_readme.py but no longer in the README: {sorted(stale)}"
    # Every test named as running a command exists.
    for why in [*SERVERS.values(), *ELSEWHERE.values()]:
        for path, name in re.findall(r"(tests/\w+\.py)::(\w+)", why):
            assert f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name} does not exist"


def test_every_make_target_the_readme_names_exists(checkout: Path) -> None:
    targets = {
        command.split()[1]
        for block in readme_commands()
        for command in block
        if command.startswith("make ") and len(command.split()) == 2
    }
    assert {"demo", "test", "install", "ui", "airflow", "airflow-dag-test"} <= targets
    for target in sorted(targets):
        dry = subprocess.run(["make", "-n", target], cwd=checkout, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"
    ui = subprocess.run(
        ["make", "-n", "ui", "PORT=3001"], cwd=checkout, capture_output=True, text=True, timeout=60
    )
    assert ".venv/bin/buffalo dev --port 3001" in ui.stdout


def test_the_buffalo_server_commands_parse_as_written() -> None:
    """Servers run until stopped: here every option they are given must exist and be valid."""
    from buffalo_assets.cli import main

    for command in SERVERS:
        if not command.startswith(".venv/bin/buffalo "):
            continue
        args = command.removeprefix(".venv/bin/buffalo ").removesuffix(" &").split()
        with main.make_context("buffalo", list(args)) as context:
            sub = main.get_command(context, args[0])
            assert isinstance(sub, click.Command)
            sub.make_context(args[0], args[1:], parent=context)  # raises on an unknown or bad option


def _user_env(checkout: Path) -> dict[str, str]:
    """A user's shell: no BUFFALO_ or DAGSTER_ variables; the checkout's code on the path."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BUFFALO_", "DAGSTER_"))}
    return {**clean, "PYTHONPATH": str(checkout)}  # the copy's code, not the installed checkout's


def _user_edits_env_file(running: RunningSandbox, pg_url: str) -> list[str]:
    """What the README asks after `cp .env.example .env`: the account (here the sandbox) and database."""
    config = running.sandbox.config
    values = {
        "BUFFALO_BASE_URL": running.url,
        "BUFFALO_USERNAME": config.username,
        "BUFFALO_PASSWORD": config.password,
    }
    edits = [f"sed -i 's|^{name}=.*|{name}={value}|' .env" for name, value in values.items()]
    return [*edits, f"echo 'BUFFALO_PG_URL={pg_url}' >> .env"]


def _run_block(
    commands: list[str], checkout: Path, env: dict[str, str], edits: list[str]
) -> subprocess.CompletedProcess[str]:
    lines = ["set -euo pipefail"]
    for command in commands:
        lines += [f"echo '+ {command}' >&2", command]
        if command == "cp .env.example .env":
            lines += edits
    return subprocess.run(
        ["bash", "-c", "\n".join(lines)], cwd=checkout, env=env, capture_output=True, text=True, timeout=300
    )


def runnable_blocks() -> Iterator[list[str]]:
    """The commands run here, block by block (a block the README repeats is run once)."""
    seen: list[list[str]] = []
    for block in readme_commands():
        chosen = [command for command in block if command in RUN]
        if chosen and chosen not in seen:
            seen.append(chosen)
            yield chosen


def test_the_readme_commands_run_as_written_from_a_fresh_checkout(
    checkout: Path, start_sandbox: SandboxFactory, pg_url: str, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=150)
    env = _user_env(checkout)
    edits = _user_edits_env_file(running, pg_url)
    ran: list[str] = []
    outputs: list[str] = []
    for block in runnable_blocks():
        result = _run_block(block, checkout, env, edits)
        assert result.returncode == 0, f"{block}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        ran.extend(block)
        outputs.append(result.stdout + result.stderr)
    assert sorted(ran) == sorted(RUN)
    everything = "\n".join(outputs)
    # `cp .env.example .env` then `buffalo settings`: the .env is read, the password masked.
    env_file = (checkout / ".env").read_text()
    assert env_file.startswith((checkout / ".env.example").read_text().split("BUFFALO_BASE_URL=")[0])
    assert f"{checkout / '.env'} (read)" in everything
    assert re.search(r"BUFFALO_PASSWORD\s+\*{8}\s+\(set\)", everything)
    assert running.sandbox.config.password not in everything
    # `buffalo check` against the sandbox.
    assert "login      ok as demo@solo.example" in everything and "nothing was stored" in everything
    # `eval "$(buffalo env)"` then `dagster asset materialize`: the orders are stored, and the
    # run is in the instance `make ui` shows (the checkout's .buffalo/dagster, on BUFFALO_PG_URL).
    assert (checkout / ".buffalo" / "dagster" / "dagster.yaml").exists()
    with empty_store.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT count(DISTINCT order_id) FROM raw.order_versions")
        ).scalar_one()
    assert stored == 150
    assert "RUN_SUCCESS" in everything


def test_every_test_the_readme_names_exists() -> None:
    named = re.findall(r"`(tests/\w+\.py)::(\w+)`", README.read_text())
    assert len(named) > 10
    missing = [f"{path}::{name}" for path, name in named if f"def {name}(" not in (ROOT / path).read_text()]
    assert not missing, f"the README names tests that do not exist: {missing}"
