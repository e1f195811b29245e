"""The README and docs/ stay true: their commands work, and what they name exists.

Each command of a ```bash block of README.md or docs/*.md is either run here (from a copy of
the checkout's tracked files, as a new user would run it), parsed here (servers: their
options must exist), or named with the test that runs it or the reason it cannot run on
this machine. A new command fails `test_every_documented_command_is_run_or_accounted_for`,
naming its file, until it is listed.

The other tests check what the documentation names: tests, repository paths, links, the
pages of the documentation index, the packages of the layout, the commands and options of
`buffalo` and the make targets, the settings; and that it holds no machine path or word
only its authors would understand.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import sqlalchemy as sa

from buffalo_assets import settings
from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import ROOT, SandboxFactory

README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHANGELOG = ROOT / "CHANGELOG.md"
README_MAX_LINES = 250


def documents() -> list[Path]:
    """The README and every page of docs/, in the order their commands are run."""
    return [README, *sorted(DOCS.glob("*.md"))]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# Run here, in a copy of the checkout (see `checkout`), block by block in document order.
ENV_BLOCK = 'eval "$(.venv/bin/buffalo env)"'
INGEST = ".venv/bin/dagster asset materialize -m buffalo_assets.definitions --select order_ids,raw_orders"
RETRAIN = (
    ".venv/bin/dagster asset materialize -m buffalo_assets.definitions --select delay_model "
    """--config-json '{"ops": {"delay_model": {"config": {"retrain": true}}}}'"""
)
POOL = ".venv/bin/dagster instance concurrency get buffalo_api"
RUN = {
    "cp .env.example .env",
    "chmod 600 .env",
    ".venv/bin/buffalo settings",
    ".venv/bin/buffalo check",
    ".venv/bin/buffalo settings --markdown",
    ENV_BLOCK,
    INGEST,
    RETRAIN,
    POOL,
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
    SANDBOX_WITH_FAULTS: "the same, with every fault option",
    "make airflow": (
        "tests/test_airflow.py::test_scheduler_and_triggerer_run_a_triggered_dag_run_waiting_deferred"
    ),
    ".venv/bin/buffalo dev --demo": (
        "tests/test_project.py::test_after_the_demo_dev_demo_serves_its_world_again_and_a_ui_run_continues_the_story"
    ),
    ".venv/bin/buffalo report --demo --serve": "`buffalo report --serve`: "
    "tests/test_analytics.py::test_a_winning_challenger_becomes_the_champion_scores_and_later_runs_keep_it",
    ".venv/bin/dg dev": (
        "tests/test_dg.py::test_dg_dev_with_nothing_set_starts_the_embedded_server_and_serves_the_project"
    ),
}
AIRFLOW_CONN_JSON = (
    'AIRFLOW_CONN_DAGSTER_DEFAULT=\'{"conn_type": "dagster", "host": "https://dagster.example.com", '
    '"password": "TOKEN", "extra": {"token_header": "Dagster-Cloud-Api-Token", '
    '"ca_bundle": "/etc/ssl/corp.pem"}}\''
)
BENCHMARK = "a benchmark (minutes), not a test"
COMPOSE = "needs Docker, which this machine does not run: tests/test_deploy.py checks the compose file"
DG_CHECK = "tests/test_dg.py::test_dg_check_defs_and_list_defs_load_the_project_with_nothing_set"
BI_ROLE = (
    "`buffalo db grant-bi`: tests/test_security.py::test_the_bi_role_reads_the_bi_views_and_nothing_else"
)
BI_TLS = "tests/test_bi_tls.py::test_power_bi_reads_the_bi_views_over_verified_tls_and_never_without_it"
FIREWALL = "changes the server's firewall (iptables, as root): never on a test machine"
RESEND = (
    "needs given-up alerts: tests/test_customer_alerts.py::"
    "test_alerts_given_up_while_the_service_was_down_are_delivered_after_a_resend"
)
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
    "AIRFLOW_CONN_DAGSTER_DEFAULT='dagster://webserver:3000'": "a value of Airflow's connection, not a "
    "command",
    "AIRFLOW_CONN_DAGSTER_DEFAULT='https://:TOKEN@dagster.example.com'": "the same",
    AIRFLOW_CONN_JSON: "the same",
    'pip install "apache-airflow==3.3.2" ./airflow/provider --constraint '
    "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.11.txt": (
        "needs GitHub for the official constraints; make airflow-venv installs the provider the same way: "
        "tests/test_airflow.py::"
        "test_the_provider_is_pip_installed_and_airflow_offers_the_dagster_connection_type_link_and_test"
    ),
    ".venv/bin/python -m bench.ingest --orders 2000 --latency-ms 50 --concurrency 16": BENCHMARK,
    ".venv/bin/python -m bench.ingest --orders 10000 --history-days 210 --skip-baseline": BENCHMARK,
    ".venv/bin/python -m bench.ingest --orders 100000 --skip-baseline": BENCHMARK,
    ".venv/bin/python -m bench.transform --orders 100000 --changed 1000": BENCHMARK,
    ".venv/bin/python -m bench.delay": BENCHMARK,
    ".venv/bin/python -m bench.delay --skip-scale": BENCHMARK,
    ".venv/bin/python -m bench.delay --worlds devA,devA2 --orders 8000 --days 120 --skip-scale": BENCHMARK,
    ".venv/bin/python -m bench.delay --scale-only --orders 100000": BENCHMARK,
    ".venv/bin/python -m bench.delay --report bench/results/report": BENCHMARK,
    ".venv/bin/python -m bench.scoring": BENCHMARK,
    ".venv/bin/python -m bench.scoring --in-flight 10000": BENCHMARK,
    "make bench-venv": "installs dlt, the benchmark's peer, into bench/.venv-dlt (minutes of pip)",
    ".venv/bin/python -m bench.e2e": BENCHMARK,
    ".venv/bin/python -m bench.e2e --orders 100000 --latency-ms 20 --skip-baseline --skip-dlt "
    "--repeat 1": BENCHMARK,
    ".venv/bin/python -m bench.e2e --orders 1000000 --latency-ms 20": BENCHMARK,
    ".venv/bin/python -m bench.e2e --orders 100000 --latency-ms 5 --steps ingest,transform,analytics": (
        BENCHMARK
    ),
    ".venv/bin/dg check defs": DG_CHECK,
    ".venv/bin/dg list defs": DG_CHECK,
    ".venv/bin/dg launch --assets order_ids,raw_orders": (
        "tests/test_dg.py::test_dg_launch_ingests_the_sandbox_into_the_database_and_records_the_run_there"
    ),
    "git clone <this repository> buffalo && cd buffalo": "a clone: this file runs in a copy of the checkout",
    "$EDITOR .env": "the user's editor",
    "docker compose build": COMPOSE,
    "docker compose up -d": COMPOSE,
    "docker compose ps": COMPOSE,
    "docker compose run --rm proxy caddy hash-password": COMPOSE + "; the proxy runs natively in "
    "tests/test_deploy.py::test_the_proxy_asks_for_the_login_over_tls_and_only_then_shows_the_ui",
    "docker compose --profile auth up -d": COMPOSE,
    "docker compose exec -T postgres pg_dump -U buffalo -d buffalo -n raw -n ops -Fc > "
    "buffalo-raw-$(date +%F).dump": COMPOSE,
    "docker compose exec -T postgres pg_restore -U buffalo -d buffalo --clean --if-exists < "
    "buffalo-raw-2026-11-29.dump": COMPOSE,
    ".venv/bin/buffalo db make-cert --host db.example.internal --host 10.20.0.5 --out deploy/certs/": (
        "`buffalo db make-cert`: " + BI_TLS
    ),
    "docker compose restart postgres": COMPOSE,
    'docker compose run --rm --no-deps --user "$(id -u):$(id -g)" -v "$PWD/deploy/certs:/certs" '
    "webserver buffalo db make-cert --host db.example.internal --host 10.20.0.5 --out /certs": COMPOSE,
    "sudo iptables -I DOCKER-USER -i eth0 -p tcp --dport 5432 -j DROP": FIREWALL,
    "sudo iptables -I DOCKER-USER -i eth0 -p tcp --dport 5432 -s 10.20.0.0/16 -j ACCEPT": FIREWALL,
    "sudo iptables -I DOCKER-USER -i eth0 -p tcp --dport 5432 -s 10.30.0.7 -j ACCEPT": FIREWALL,
    'psql "host=db.example.internal port=5432 dbname=buffalo user=buffalo_bi sslmode=verify-full '
    "sslrootcert=ca.crt\" -c 'SELECT * FROM analytics.bi_delivery_kpis LIMIT 1'": (
        "the same connection through libpq, to the test's own server: " + BI_TLS
    ),
    "BUFFALO_BI_PASSWORD='a-long-random-password' .venv/bin/buffalo db grant-bi": BI_ROLE,
    "BUFFALO_BI_PASSWORD='...' .venv/bin/buffalo db grant-bi --role powerbi_finance": BI_ROLE,
    ".venv/bin/python -m pytest -q tests/test_settings.py": "a file of this suite",
    "BUFFALO_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py": (
        "rewrites a tracked file; the test it runs: "
        "tests/test_definitions_snapshot.py::test_the_definitions_graph_matches_the_snapshot"
    ),
    ".venv/bin/buffalo customer-alerts resend": RESEND,
    ".venv/bin/buffalo customer-alerts resend --since 2026-12-07T08:00:00": RESEND,
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
FENCE = re.compile(r"^\s*```(\w*)\s*$")


def readme_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block: comments dropped, continued and quoted lines joined."""
    blocks: list[list[str]] = []
    language: str | None = None  # inside a fence: its language ("" when none)
    commands: list[str] = []
    pending = ""
    for line in text.splitlines():
        fence = FENCE.match(line)
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


def documented_blocks() -> list[tuple[str, list[str]]]:
    """Every ```bash block of the README and docs/, with the file it is in."""
    return [(_name(path), block) for path in documents() for block in readme_blocks(path.read_text())]


def _prose(text: str) -> str:
    """The text outside fenced blocks (each fenced line left empty, so line numbers hold)."""
    kept, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            kept.append("")
        else:
            kept.append("" if inside else line)
    return "\n".join(kept)


# -- commands --------------------------------------------------------------------------------


def test_every_documented_command_is_run_or_accounted_for() -> None:
    blocks = documented_blocks()
    listed = RUN | set(SERVERS) | set(ELSEWHERE)
    unaccounted = [
        f"{name}: {command}" for name, block in blocks for command in block if command not in listed
    ]
    assert not unaccounted, (
        "commands neither run here nor listed in tests/test_readme.py (RUN, SERVERS or ELSEWHERE):\n"
        + "\n".join(unaccounted)
    )
    found = {command for _, block in blocks for command in block}
    stale = listed - found
    assert not stale, f"listed in tests/test_readme.py but in no document: {sorted(stale)}"
    # Every test named as running a command exists.
    for why in [*SERVERS.values(), *ELSEWHERE.values()]:
        for path, name in re.findall(r"(tests/\w+\.py)::(\w+)", why):
            assert f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name} does not exist"


def test_every_make_target_the_documents_name_exists(checkout: Path) -> None:
    targets = {
        command.split()[1]
        for _, block in documented_blocks()
        for command in block
        if command.startswith("make ") and len(command.split()) == 2
    }
    assert {"demo", "test", "install", "ui", "airflow", "airflow-dag-test", "bench-venv"} <= targets
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
            assert isinstance(sub, click.Command), command
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


def runnable_blocks() -> Iterator[tuple[list[str], list[str]]]:
    """The commands run here, block by block, with the files they are in (a block repeated is run once)."""
    chosen_blocks: list[list[str]] = []
    files: list[list[str]] = []
    for name, block in documented_blocks():
        chosen = [command for command in block if command in RUN]
        if not chosen:
            continue
        if chosen in chosen_blocks:
            files[chosen_blocks.index(chosen)].append(name)
        else:
            chosen_blocks.append(chosen)
            files.append([name])
    yield from zip(chosen_blocks, files, strict=True)


def test_the_documented_commands_run_as_written_from_a_fresh_checkout(
    checkout: Path, start_sandbox: SandboxFactory, pg_url: str, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=150)
    with empty_store.begin() as connection:  # models trained by earlier tests in this database
        connection.execute(
            sa.text(
                "TRUNCATE ops.delay_models, ops.delay_retrain_requests, analytics.delay_predictions, "
                "analytics.delay_model_performance, analytics.delay_model_drift"
            )
        )
    env = _user_env(checkout)
    edits = _user_edits_env_file(running, pg_url)
    ran: list[str] = []
    outputs: list[str] = []
    for block, files in runnable_blocks():
        result = _run_block(block, checkout, env, edits)
        assert result.returncode == 0, (
            f"in {', '.join(files)}: {block}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
        ran.extend(block)
        outputs.append(result.stdout + result.stderr)
    assert set(ran) == RUN
    everything = "\n".join(outputs)
    # `cp .env.example .env` then `buffalo settings`: the .env is read, the password masked.
    env_file = (checkout / ".env").read_text()
    assert env_file.startswith((checkout / ".env.example").read_text().split("BUFFALO_BASE_URL=")[0])
    assert f"{checkout / '.env'} (read)" in everything
    assert re.search(r"BUFFALO_PASSWORD\s+\*{8}\s+\(set\)", everything)
    assert running.sandbox.config.password not in everything
    # `buffalo settings --markdown`: the table docs/settings.md holds.
    assert settings.markdown_table() in everything
    # `buffalo check` against the sandbox.
    assert "login      ok as demo@solo.example" in everything and "nothing was stored" in everything
    # `eval "$(buffalo env)"` then `dagster asset materialize`: the orders are stored, and the
    # run is in the instance `make ui` shows (the checkout's .buffalo/dagster, on BUFFALO_PG_URL).
    assert (checkout / ".buffalo" / "dagster" / "dagster.yaml").exists()
    with empty_store.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT count(DISTINCT order_id) FROM raw.order_versions")
        ).scalar_one()
        # The retraining the runbook gives ran: a training row, here without enough history.
        trainings = connection.execute(sa.text("SELECT status FROM ops.delay_models")).scalars().all()
    assert stored == 150
    assert trainings == ["untrained"]
    assert "RUN_SUCCESS" in everything
    # The runbook's pool query names the pool.
    assert '"buffalo_api"' in everything


# -- what the documents name -------------------------------------------------------------------


def _named_tests(text: str) -> list[tuple[str, str]]:
    """`tests/x.py::name` references; `::name` alone means the file named last on its line."""
    named = []
    for line in text.splitlines():
        path = None
        for match in re.finditer(r"(tests/\w+\.py)(?:::(\w+))?|(?<![\w/.])::(\w+)", line):
            if match.group(1):
                path = match.group(1)
                if match.group(2):
                    named.append((path, match.group(2)))
            elif path is not None:
                named.append((path, match.group(3)))
    return named


def test_every_test_the_documents_name_exists() -> None:
    named = [(doc, *test) for doc in documents() for test in _named_tests(doc.read_text())]
    assert len(named) > 40
    missing = [
        f"{_name(doc)}: {path}::{name}"
        for doc, path, name in named
        if not (ROOT / path).exists() or f"def {name}(" not in (ROOT / path).read_text()
    ]
    assert not missing, "the documentation names tests that do not exist:\n" + "\n".join(missing)


PATH_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".j2", ".json", ".sql", ".png", ".mako")
PATH_ROOTS = ("buffalo_assets/", "tests/", "docs/", "bench/", "deploy/", ".ci/")  # not airflow/*: tags


def _repository_files() -> tuple[set[str], set[str]]:
    """Files of the checkout (tracked, or new and not ignored) and the folders holding them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    files = {name for name in listed.split("\0") if name and (ROOT / name).exists()}
    folders = {parent.as_posix() for name in files for parent in Path(name).parents if parent != Path(".")}
    return files, folders


def _ignored(paths: list[str]) -> set[str]:
    """Which of these paths git ignores: what runs make (.buffalo/, .venv, bench/results/...)."""
    if not paths:
        return set()
    answer = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT, input="\n".join(paths), capture_output=True, text=True,
    )  # fmt: skip
    return set(answer.stdout.split())


def named_paths(text: str) -> list[str]:
    """What looks like a repository path in the prose's `code` spans.

    A span without spaces, placeholders, globs or a URL, that ends with `/` or a known file
    extension or starts with one of the repository's folders: `tests/test_x.py::name` is
    `tests/test_x.py`. Absolute paths (on a server, in a container) are not the repository's.
    """
    paths = []
    for span in re.findall(r"`([^`\n]+)`", _prose(text)):
        path = span.split("::", 1)[0]
        if re.search(r"[\s<>{}$*=,()'\"|]|://", path) or path.startswith(("/", "-", "~")):
            continue
        if path.endswith("/") or path.endswith(PATH_SUFFIXES) or path.startswith(PATH_ROOTS):
            paths.append(path)
    return paths


def _exists(path: str, files: set[str], folders: set[str]) -> bool:
    """In the checkout, or the tail of a path in it (`storage/tables.py`, `durations.py`)."""
    name = path.rstrip("/")
    known = folders if path.endswith("/") else files | folders
    return name in known or any(each.endswith("/" + name) for each in known)


def test_every_repository_path_the_documents_name_exists() -> None:
    files, folders = _repository_files()
    # The changelog names where moved files were (`old -> new`): only the new paths must exist.
    changelog = re.sub(r"`[^`\n]+`(?= -> )", "", CHANGELOG.read_text())
    named = [(doc, path) for doc in documents() for path in named_paths(doc.read_text())]
    named += [(CHANGELOG, path) for path in named_paths(changelog)]
    assert len(named) > 100
    ignored = _ignored(sorted({path for _, path in named}))
    missing = [
        f"{_name(doc)}: {path}"
        for doc, path in named
        if path not in ignored and not _exists(path, files, folders)
    ]
    assert not missing, "the documentation names paths that do not exist:\n" + "\n".join(missing)


def test_the_path_check_sees_a_missing_file_and_passes_runtime_state() -> None:
    files, folders = _repository_files()
    text = (
        "`buffalo_assets/storage/tables.py`, `storage/tables.py`, `docs/images/`, "
        "`buffalo_assets/storage/table.py`, `docs/nothing.md`, `.buffalo/dagster/dagster.yaml`, "
        "`text/html`, `https://example.com/a.md`, `<order_id>.py`"
    )
    paths = named_paths(text)
    assert ".buffalo/dagster/dagster.yaml" in _ignored(paths)
    assert [p for p in paths if p not in _ignored(paths) and not _exists(p, files, folders)] == [
        "buffalo_assets/storage/table.py",
        "docs/nothing.md",
    ]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {
        _slug(line.lstrip("#").replace("`", ""))
        for line in _prose(path.read_text()).splitlines()
        if line.startswith("#")
    }


def test_every_relative_link_and_anchor_of_the_documents_resolves() -> None:
    broken = []
    for doc in [*documents(), CHANGELOG]:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc.read_text())):
            if re.match(r"\w+://", target) or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            linked = (doc.parent / file).resolve() if file else doc
            if not linked.exists():
                broken.append(f"{_name(doc)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{_name(doc)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


# -- the README and the index --------------------------------------------------------------------


def test_the_readme_reads_in_five_minutes() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference into docs/"


def _section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_documentation_index_links_every_page_of_docs_once() -> None:
    index = _section(README.read_text(), "## Documentation")
    rows = [line for line in index.splitlines() if line.startswith("| [docs/")]
    linked = [re.match(r"\| \[docs/([\w-]+\.md)\]\(docs/\1\) \| \S", row) for row in rows]
    assert all(linked), f"an index row is not `| [docs/x.md](docs/x.md) | what it covers |`: {rows}"
    pages = [match.group(1) for match in linked if match]
    assert sorted(pages) == sorted(path.name for path in DOCS.glob("*.md")), "index every docs/ page, once"


MACHINE_PATHS = re.compile(r"/work/|/root/|/home/\w+/|/tmp/pytest|/Users/")
TEAM_WORDS = re.compile(r"\b(this round|a later session|the issue|issue #|the targets of)\b", re.IGNORECASE)


def offending_lines(text: str) -> list[str]:
    return [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if MACHINE_PATHS.search(line) or TEAM_WORDS.search(line)
    ]


def test_no_machine_path_or_team_word_in_the_readme_changelog_or_docs() -> None:
    found = [
        f"{_name(doc)}:{line}"
        for doc in [README, CHANGELOG, *DOCS.glob("*.md")]
        for line in offending_lines(doc.read_text())
    ]
    assert not found, "write neutral paths (`.buffalo/...`) and plain words:\n" + "\n".join(found)


def test_the_wording_check_catches_what_it_should_and_spares_plain_sessions() -> None:
    assert offending_lines("report     /work/wt-x/.buffalo/reports/r.html")
    assert offending_lines("settings   /home/alice/buffalo/.env read")
    assert offending_lines("left for a later session") and offending_lines("fixed in this round")
    assert offending_lines("see issue #12") and offending_lines("The targets of the benchmark")
    assert not offending_lines("a database session per statement; the pytest session's database")
    assert not offending_lines("`.buffalo/reports/delivery-report.html`")


# -- the layout, the commands, the settings ---------------------------------------------------------


def layout_entries() -> dict[str, list[str]]:
    """docs/architecture.md's layout: each entry's path, with the file names its description gives."""
    text = (DOCS / "architecture.md").read_text()
    block = _section(text, "## Layout").split("```text\n", 1)[1].split("\n```", 1)[0]
    entries: dict[str, list[str]] = {}
    parents: list[tuple[int, str]] = []
    current = None
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if indent < 10:  # an entry; a description's next lines are indented further
            token, _, rest = line.strip().partition(" ")
            parents = [(level, path) for level, path in parents if level < indent]
            current = (parents[-1][1] if parents else "") + token
            if token.endswith("/"):
                parents.append((indent, current))
            entries[current] = []
        else:
            rest = line
        assert current is not None, line
        entries[current] += re.findall(r"[\w./-]+\.(?:py|yaml|toml|txt|md|j2|mako)\b", rest)
    return entries


def test_the_layout_names_every_package_and_every_path_it_names_exists() -> None:
    entries = layout_entries()
    packages = {
        init.parent.relative_to(ROOT).as_posix() + "/"
        for init in (ROOT / "buffalo_assets").rglob("__init__.py")
        if init.parent != ROOT / "buffalo_assets"
    }
    assert packages, "no package folders found"
    unnamed = sorted(packages - set(entries))
    assert not unnamed, f"docs/architecture.md's layout does not name {unnamed}"
    missing = [path for path in entries if not (ROOT / path).exists()]
    for path, names in entries.items():
        folder = ROOT / path if path.endswith("/") else (ROOT / path).parent
        missing += [f"{path}: {name}" for name in names if not (folder / name).exists()]
    assert not missing, f"docs/architecture.md's layout names what does not exist: {missing}"


def _commands(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


def _sections(text: str) -> dict[str, str]:
    """Each `## ` heading of a page with the text under it."""
    parts = re.split(r"^## (.+)$", _prose(text), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_cli_page_names_every_command_option_and_make_target() -> None:
    from buffalo_assets.cli import main

    text = (DOCS / "cli.md").read_text()
    sections = _sections(text)
    missing = []
    for path, command in _commands(main, "buffalo"):
        top = " ".join(path.split()[:2])
        section = next(
            (f"{heading}\n{body}" for heading, body in sections.items() if re.match(rf"`{top}[` ]", heading)),
            "",
        )
        if path not in section:
            missing.append(path)
            continue
        for parameter in command.params:
            if isinstance(parameter, click.Option) and not any(
                option in section for option in parameter.opts
            ):
                missing.append(f"{path} {parameter.opts[0]}")
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE)
    assert "demo" in targets and "lock" in targets
    missing += [f"make {target}" for target in targets if f"`make {target}" not in text]
    assert not missing, f"docs/cli.md does not describe: {missing}"


def test_every_setting_the_documents_name_is_a_setting_or_a_known_variable() -> None:
    from tests.test_settings import ALL, TEST_KNOBS

    compose_variables = set(re.findall(r"\$\{(BUFFALO_\w+)", (ROOT / "docker-compose.yml").read_text()))
    known = ALL | TEST_KNOBS | compose_variables
    unknown = sorted(
        f"{_name(doc)}: {name}"
        for doc in documents()
        for name in set(re.findall(r"\bBUFFALO_[A-Z_]+[A-Z]\b", doc.read_text()))
        if name not in known
    )
    assert not unknown, f"the documentation names settings that do not exist: {unknown}"
