"""Settings are declared once, reach every place that documents or deploys them, and
reading them (or importing the definitions) changes nothing on the machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from buffalo_assets import settings
from tests.conftest import ROOT

STACK = set(settings.fields_where("stack"))
# Old names of renamed stack settings: still read, so the stack still passes them.
STACK_OLD = set(settings.old_names_where("stack"))
AIRFLOW = set(settings.fields_where("airflow"))
ALL = {settings.env_name(name) for name in settings.Settings.model_fields}
# Variables only the test suite reads (documented in docs/development.md).
TEST_KNOBS = {
    "BUFFALO_TEST_PG_URL", "BUFFALO_UPDATE_SNAPSHOTS", "BUFFALO_LOAD_ORDERS", "BUFFALO_SCREENSHOTS_DIR",
}  # fmt: skip
SETTINGS_PAGE = ROOT / "docs" / "settings.md"


def _names(text: str) -> set[str]:
    return set(re.findall(r"\bBUFFALO_[A-Z_]+[A-Z]\b", text))


def _tables(text: str) -> list[str]:
    """Each Markdown table of a page, its lines as written."""
    tables: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return ["\n".join(table) + "\n" for table in tables]


def test_the_settings_page_holds_exactly_the_table_generated_from_the_declarations() -> None:
    page = SETTINGS_PAGE.read_text()
    generated = settings.markdown_table()
    settings_tables = [table for table in _tables(page) if table.startswith("| variable |")]
    assert settings_tables == [generated], (
        "docs/settings.md: replace the table with the output of `.venv/bin/buffalo settings --markdown`"
    )
    # The sentence above it says so, and how to regenerate it.
    above = page[: page.index(generated)]
    assert "exactly the output of `buffalo settings --markdown`" in " ".join(above.split())
    assert _names(page) - TEST_KNOBS == ALL


def test_the_settings_table_check_sees_a_stale_table() -> None:
    generated = settings.markdown_table()
    stale = generated.replace("`16`", "`8`", 1)
    assert _tables(f"text\n\n{stale}\nmore\n") == [stale] != [generated]


def test_the_test_suites_own_variables_are_documented_for_maintainers() -> None:
    development = (ROOT / "docs" / "development.md").read_text()
    assert _names(development) >= TEST_KNOBS


def test_env_example_lists_every_setting_and_no_unknown_one() -> None:
    listed = _names((ROOT / ".env.example").read_text())
    assert listed == ALL


def test_the_deployed_stack_passes_every_setting_the_dagster_processes_read() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dagster_env = compose["x-dagster-env"]
    assert {n for n in dagster_env if n.startswith("BUFFALO_")} == STACK | STACK_OLD
    for service in ("user-code", "webserver", "daemon"):
        assert set(compose["services"][service]["environment"]) >= STACK | STACK_OLD, service
    run_launcher = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["run_launcher"]
    assert set(run_launcher["config"]["env_vars"]) == STACK | STACK_OLD
    # A renamed setting gets no default from compose: it would contradict its old name in .env.
    assert STACK_OLD
    for old in STACK_OLD:
        new = settings.env_name(settings.RENAMED[old])
        assert (dagster_env[old], dagster_env[new]) == (f"${{{old}:-}}", f"${{{new}:-}}")


def test_only_the_settings_module_and_the_cli_hand_over_touch_the_environment() -> None:
    readers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "buffalo_assets").rglob("*.py")
        if "os.environ" in path.read_text()
    }
    assert readers <= {"buffalo_assets/settings.py", "buffalo_assets/cli/dev.py"}


def test_settings_come_from_dotenv_without_changing_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "BUFFALO_CONCURRENCY=5\nBUFFALO_ORCHESTRATOR=airflow\nBUFFALO_PASSWORD=s3cret\n"
    )
    monkeypatch.setenv("BUFFALO_HOME", str(tmp_path))
    monkeypatch.setenv("BUFFALO_CONCURRENCY", "7")  # the environment wins over .env
    monkeypatch.delenv("BUFFALO_PASSWORD", raising=False)
    current = settings.load()
    assert current.concurrency == 7
    assert current.orchestrator == "airflow"
    assert current.password is not None and current.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(current)
    assert not current.schedule_on  # Airflow orchestrates: Dagster's schedule stays off
    assert "BUFFALO_PASSWORD" not in os.environ and "BUFFALO_ORCHESTRATOR" not in os.environ


def test_a_wrong_setting_is_refused_with_its_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "settings"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "BUFFALO_HOME": str(tmp_path), "BUFFALO_CONCURRENCY": "many"},
        timeout=60,
    )
    assert result.returncode != 0
    assert "concurrency" in result.stderr and "many" in result.stderr


def test_a_prediction_retention_shorter_than_the_open_weeks_is_refused_naming_both_never_a_secret(
    tmp_path: Path,
) -> None:
    secret = "hunter2-the-account-password"  # noqa: S105 - made up, to prove it never shows
    env = {"BUFFALO_PREDICTION_RETENTION_DAYS": "10", "BUFFALO_PASSWORD": secret}
    refused = _buffalo("settings", tmp_path, env)
    assert refused.returncode == 1
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
    assert "BUFFALO_PREDICTION_RETENTION_DAYS must be at least 42 days" in error
    assert "BUFFALO_PROMISE_BUSINESS_DAYS=10" in error
    assert secret not in refused.stdout + refused.stderr and "Traceback" not in refused.stderr


# -- renamed settings ----------------------------------------------------------------------

TOKEN = "T0K3N-of-the-ops-hook"  # noqa: S105 - a made-up token, to prove it never shows
OPS_HOOK = f"https://hooks.example/services/{TOKEN}"
# What each old name is set to below, and the value the new name then has.
OLD_VALUES = {
    "BUFFALO_ALERT_WEBHOOK": (OPS_HOOK, "********"),
    "BUFFALO_ALERT_COOLDOWN_HOURS": ("12", "12.0"),
    "BUFFALO_ALERT_MAX_ATTEMPTS": ("3", "3"),
    "BUFFALO_ALERT_RETRY_S": ("5", "5.0"),
    "BUFFALO_ALERT_TIMEOUT_S": ("2.5", "2.5"),
}


def _buffalo(command: str, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`buffalo <command>` as a user runs it: only `env` and the .env file in `home` set."""
    return subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", command],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "BUFFALO_HOME": str(home), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _settings_lines(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line.startswith("BUFFALO_")}


# Nothing answers there: `buffalo check` stops at the API, after the settings and warnings.
UNREACHABLE_API = {
    "BUFFALO_BASE_URL": "http://127.0.0.1:9",
    "BUFFALO_USERNAME": "ops@solo.example",
    "BUFFALO_PASSWORD": "pw",
}


def test_the_renamed_settings_are_read_by_their_new_names_without_a_warning(tmp_path: Path) -> None:
    new_values = {settings.env_name(settings.RENAMED[old]): value for old, (value, _) in OLD_VALUES.items()}
    shown = _buffalo("settings", tmp_path, new_values)
    assert shown.returncode == 0, shown.stderr
    lines = _settings_lines(shown.stdout)
    for old, (_, expected) in OLD_VALUES.items():
        new = settings.env_name(settings.RENAMED[old])
        assert lines[new].split()[1:3] == [expected, "(set)"], lines[new]
        assert old not in shown.stdout + shown.stderr
    assert "warning" not in shown.stderr and TOKEN not in shown.stdout + shown.stderr
    checked = _buffalo("check", tmp_path, {**new_values, **UNREACHABLE_API})
    assert "cannot reach http://127.0.0.1:9" in checked.stderr  # it got as far as the API
    assert "warning" not in checked.stdout and TOKEN not in checked.stdout + checked.stderr


def test_an_old_name_still_works_and_settings_and_check_warn_naming_old_and_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The webhook's old name in .env (where most set it), the others in the environment.
    env_file = tmp_path / ".env"
    env_file.write_text(f"BUFFALO_ALERT_WEBHOOK={OPS_HOOK}\n")
    env_file.chmod(0o600)
    environment = {old: value for old, (value, _) in OLD_VALUES.items() if old != "BUFFALO_ALERT_WEBHOOK"}

    shown = _buffalo("settings", tmp_path, environment)
    assert shown.returncode == 0, shown.stderr
    lines = _settings_lines(shown.stdout)
    warnings = [line for line in shown.stderr.splitlines() if line.startswith("warning: ")]
    for old, (_, expected) in OLD_VALUES.items():
        new = settings.env_name(settings.RENAMED[old])
        assert lines[new].split()[1] == expected, lines[new]  # the old name's value is used
        assert f"old name {old} in use" in lines[new]
        [warning] = [line for line in warnings if f"{old} -> {new}:" in line]
        assert "until the next minor release" in warning
    assert len(warnings) == len(OLD_VALUES)
    assert TOKEN not in shown.stdout + shown.stderr

    checked = _buffalo("check", tmp_path, {**environment, **UNREACHABLE_API})
    said = [line for line in checked.stdout.splitlines() if line.startswith("warning ")]
    for old in OLD_VALUES:
        assert any(f"{old} -> {settings.env_name(settings.RENAMED[old])}:" in line for line in said), old
    assert TOKEN not in checked.stdout + checked.stderr

    # In the processes that use them (the sensors read settings.load()), the same values.
    for key in list(os.environ):
        if key.startswith("BUFFALO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BUFFALO_HOME", str(tmp_path))
    for old, value in environment.items():
        monkeypatch.setenv(old, value)
    current = settings.load()
    assert current.ops_alert_webhook is not None and current.ops_alert_webhook.get_secret_value() == OPS_HOOK
    assert (current.customer_alert_cooldown_hours, current.customer_alert_max_attempts) == (12.0, 3)
    assert (current.customer_alert_retry_s, current.customer_alert_timeout_s) == (5.0, 2.5)
    assert set(current.renamed_in_use) == set(OLD_VALUES)
    assert TOKEN not in repr(current)


def test_an_old_and_a_new_name_set_to_different_values_fail_naming_both_never_the_values(
    tmp_path: Path,
) -> None:
    other_hook = "https://hooks.example/services/0TH3R-token"
    env_file = tmp_path / ".env"
    env_file.write_text(f"BUFFALO_ALERT_WEBHOOK={OPS_HOOK}\n")  # the old name, left in .env
    env_file.chmod(0o600)
    both = {"BUFFALO_OPS_ALERT_WEBHOOK": other_hook, "BUFFALO_ALERT_MAX_ATTEMPTS": "3",
            "BUFFALO_CUSTOMER_ALERT_MAX_ATTEMPTS": "5"}  # fmt: skip
    for command, env in (("settings", both), ("check", {**both, **UNREACHABLE_API})):
        refused = _buffalo(command, tmp_path, env)
        output = refused.stdout + refused.stderr
        assert refused.returncode == 1, output
        [error] = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
        assert (
            "BUFFALO_ALERT_WEBHOOK and BUFFALO_OPS_ALERT_WEBHOOK are both set, to different values" in error
        )
        assert (
            "BUFFALO_ALERT_MAX_ATTEMPTS and BUFFALO_CUSTOMER_ALERT_MAX_ATTEMPTS are both set, "
            "to different values" in error
        )
        assert "Traceback" not in output and "cannot reach" not in output  # stopped at the settings
        assert TOKEN not in output and "0TH3R" not in output
    # Both names set to the same value is no conflict (`3` and `3.0` of a number agree): it
    # works, with the warning to drop the old name.
    agreeing = {
        "BUFFALO_OPS_ALERT_WEBHOOK": OPS_HOOK,
        "BUFFALO_ALERT_RETRY_S": "3",
        "BUFFALO_CUSTOMER_ALERT_RETRY_S": "3.0",
    }
    same = _buffalo("settings", tmp_path, agreeing)
    assert same.returncode == 0, same.stderr
    assert "BUFFALO_ALERT_WEBHOOK -> BUFFALO_OPS_ALERT_WEBHOOK:" in same.stderr
    assert "BUFFALO_ALERT_RETRY_S -> BUFFALO_CUSTOMER_ALERT_RETRY_S:" in same.stderr
    assert TOKEN not in same.stdout + same.stderr


IMPORT_PROBE = """
import json, os, sys
before = dict(os.environ)
import buffalo_assets.definitions as d
def parent(pid):
    try:
        return open(f'/proc/{pid}/stat').read().split(') ')[1].split()[1]
    except FileNotFoundError:  # a process elsewhere on the machine ended meanwhile
        return None
children = [p for p in os.listdir('/proc') if p.isdigit() and parent(p) == str(os.getpid())]
print(json.dumps({
    "environ_changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
    "children": children,
    "schedule": d.defs.get_schedule_def("ingest_orders_schedule").default_status.value,
    "heavy": sorted(m for m in ("uvicorn", "starlette") if m in sys.modules),
}))
"""


def test_importing_the_definitions_starts_nothing_writes_nothing_and_loads_no_dotenv(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "workspace.yaml").write_text((ROOT / "workspace.yaml").read_text())
    (project / ".env").write_text("BUFFALO_BASE_URL=https://buffalo.invalid\nBUFFALO_PASSWORD=from-dotenv\n")
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        capture_output=True,
        text=True,
        cwd=project,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["environ_changed"] == []
    assert probe["children"] == []
    assert sorted(p.name for p in project.iterdir()) == [".env", "workspace.yaml"]  # no .buffalo/
    # A real API is configured in .env and Dagster orchestrates by default: the schedule is on.
    assert probe["schedule"] == "RUNNING"


def test_without_a_database_a_run_fails_with_one_line_naming_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buffalo_assets.storage.database import NoDatabaseError
    from buffalo_assets.storage.resource import PostgresResource

    monkeypatch.setenv("BUFFALO_HOME", str(tmp_path))
    monkeypatch.delenv("BUFFALO_PG_URL", raising=False)
    with pytest.raises(NoDatabaseError) as refused:
        PostgresResource().get_engine()
    message = str(refused.value)
    assert "\n" not in message
    assert "BUFFALO_PG_URL" in message and "`buffalo dev`" in message
    assert not (tmp_path / ".buffalo").exists()  # nothing was started or created


def test_the_airflow_side_reads_exactly_its_declared_settings_and_compose_passes_them() -> None:
    shared = {"BUFFALO_ORCHESTRATOR", "BUFFALO_INGEST_CRON", "BUFFALO_OPS_ALERT_WEBHOOK"}
    read = set()
    for path in [*(ROOT / "airflow" / "dags").glob("*.py"), *(ROOT / "airflow" / "provider").rglob("*.py")]:
        read |= _names(path.read_text())
    assert read == AIRFLOW | shared
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if name.startswith("airflow-") and name != "airflow-db":
            assert {n for n in service["environment"] if n.startswith("BUFFALO_")} == AIRFLOW | shared, name


def test_plain_dagster_in_the_checkout_where_no_database_can_be_had_fails_with_one_line_naming_the_way_out(
    tmp_path: Path,
) -> None:
    # No DAGSTER_HOME, no BUFFALO_PG_URL, and BUFFALO_HOME is a file, so the embedded server
    # cannot be made: what a Dagster user gets from `dagster asset materialize` (or `dg dev`)
    # in the checkout. (With a usable BUFFALO_HOME it starts the server: tests/test_dg.py.)
    not_a_folder = tmp_path / "home-is-a-file"
    not_a_folder.write_text("")
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "buffalo_assets.definitions",
         "--select", "order_ids"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BUFFALO_HOME": str(not_a_folder)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        f"cannot start the embedded PostgreSQL in {not_a_folder}/.buffalo/postgres: Not a directory; "
        "set BUFFALO_HOME to a writable folder, or BUFFALO_PG_URL to use another server"
    ) in output
    assert not_a_folder.read_text() == ""


def test_a_deployment_still_using_an_old_setting_name_is_warned_where_the_definitions_load(
    tmp_path: Path,
) -> None:
    """A compose deployment runs no `buffalo settings`: the code server's log says it instead."""
    result = subprocess.run(
        [sys.executable, "-c", "import buffalo_assets.definitions"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "BUFFALO_HOME": str(tmp_path),
            "BUFFALO_ALERT_WEBHOOK": "https://hooks.example.com/services/T0/B0/s3cr3t-token",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BUFFALO_ALERT_WEBHOOK -> BUFFALO_OPS_ALERT_WEBHOOK: the setting was renamed" in result.stderr
    assert "s3cr3t-token" not in result.stderr + result.stdout
