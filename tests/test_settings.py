"""Settings are declared once, reach every place that documents or deploys them, and
reading them (or importing the definitions) changes nothing on the machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from buffalo_assets import settings
from tests.conftest import ROOT

STACK = set(settings.fields_where("stack"))
AIRFLOW = set(settings.fields_where("airflow"))
ALL = {settings.env_name(name) for name in settings.Settings.model_fields}
# Variables only the test suite reads (documented under "Tests" in the README).
TEST_KNOBS = {
    "BUFFALO_TEST_PG_URL", "BUFFALO_UPDATE_SNAPSHOTS", "BUFFALO_LOAD_ORDERS", "BUFFALO_SCREENSHOTS_DIR",
}  # fmt: skip


def _names(text: str) -> set[str]:
    return set(re.findall(r"\bBUFFALO_[A-Z_]+[A-Z]\b", text))


def test_the_readme_settings_table_is_the_one_generated_from_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text()
    assert settings.markdown_table() in readme, "regenerate it with `buffalo settings --markdown`"
    documented = _names(readme[readme.index("## Settings") : readme.index("## Commands")])
    assert documented - TEST_KNOBS == ALL


def test_env_example_lists_every_setting_and_no_unknown_one() -> None:
    listed = _names((ROOT / ".env.example").read_text())
    assert listed == ALL


def test_the_deployed_stack_passes_every_setting_the_dagster_processes_read() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dagster_env = set(compose["x-dagster-env"])
    assert {n for n in dagster_env if n.startswith("BUFFALO_")} == STACK
    for service in ("user-code", "webserver", "daemon"):
        assert set(compose["services"][service]["environment"]) >= STACK, service
    run_launcher = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["run_launcher"]
    assert set(run_launcher["config"]["env_vars"]) == STACK


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
    import os

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
    shared = {"BUFFALO_ORCHESTRATOR", "BUFFALO_INGEST_CRON"}
    read = set()
    for path in [*(ROOT / "airflow" / "dags").glob("*.py"), *(ROOT / "airflow" / "plugins").rglob("*.py")]:
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
