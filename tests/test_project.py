"""The project as users meet it: definitions load, the CLI and the main job work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import Definitions
from sqlalchemy.engine import make_url

from buffalo_assets.storage.database import drop_database
from tests.conftest import SandboxFactory
from tests.pipeline import MATERIALIZE

ROOT = Path(__file__).resolve().parents[1]


def dagster_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return {**os.environ, "BUFFALO_PG_URL": pg_url, "DAGSTER_HOME": str(home)}


def test_definitions_load_with_the_buffalo_resource() -> None:
    from buffalo_assets.definitions import defs

    assert isinstance(defs, Definitions)
    resources = defs.resources or {}
    assert "buffalo" in resources


# Imported by nothing the definitions or an ingest step needs; each costs start-up time of
# every run, code server start and UI reload. pandas and numpy: only the transform and
# analytics steps use them (imported on first use, buffalo_assets/lazy.py).
HEAVY_MODULES = (
    "pandas",
    "numpy",
    "buffalo_assets.sandbox",
    "starlette",
    "uvicorn",
    "matplotlib",
    "sklearn",
    "scipy",
    "alembic",
)


def test_loading_the_definitions_in_a_fresh_interpreter_imports_nothing_heavy_it_does_not_use() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, buffalo_assets.definitions; print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout)
    assert "dagster" in loaded and "buffalo_assets.assets.ingestion" in loaded
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES)]
    assert heavy == []


# The documented ingest command (docs/getting-started.md), run by Dagster's own CLI entry
# point in a fresh interpreter, reporting which of the heavy modules it imported by the time it exited.
INGEST_AND_REPORT = """
import json, sys
from dagster._cli import main
sys.argv = ["dagster", "asset", "materialize", "-m", "buffalo_assets.definitions",
            "--select", "order_ids,raw_orders"]
try:
    main()
except SystemExit as done:
    status = done.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "numpy", "sklearn", "starlette"})
print(json.dumps({"status": status, "heavy": heavy}))
"""


def test_an_ingest_run_stores_the_orders_without_importing_pandas(
    pg_url: str, tmp_path: Path, start_sandbox: SandboxFactory, empty_store: sa.Engine
) -> None:
    """`dagster asset materialize --select order_ids,raw_orders` pays for no import it does not
    use: the step writes its rows as CSV itself, so pandas (a third of a second) is never loaded."""
    sandbox = start_sandbox(orders=40)
    env = {
        **dagster_env(pg_url, tmp_path),
        "BUFFALO_BASE_URL": sandbox.url,
        "BUFFALO_USERNAME": sandbox.sandbox.config.username,
        "BUFFALO_PASSWORD": sandbox.sandbox.config.password,
    }
    result = subprocess.run(
        [sys.executable, "-c", INGEST_AND_REPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": 0, "heavy": []}, result.stderr[-3000:]
    with empty_store.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT count(DISTINCT order_id) FROM raw.order_versions")
        ).scalar_one()
        ids = connection.execute(sa.text("SELECT count(*) FROM raw.order_ids")).scalar_one()
    assert (stored, ids) == (40, 40)


def test_dagster_validates_the_workspace(pg_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=dagster_env(pg_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_db_url_prints_the_configured_database(pg_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "db", "url"],
        env={**os.environ, "BUFFALO_PG_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == pg_url


def test_the_main_job_on_a_world_worded_in_chinese_summarises_its_verdict_without_a_trace(
    pg_url: str,
) -> None:
    demo_db = f"{make_url(pg_url).database}_demo_zh"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "buffalo_assets.cli",
            "demo",
            "--delay-process",
            "backlog",
            "--event-texts",
            "zh",
        ],
        cwd=ROOT,
        env={**os.environ, "BUFFALO_PG_URL": pg_url, "BUFFALO_DEMO_DB": demo_db},
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert "delay process backlog, texts in zh" in next(
            line for line in lines if line.startswith("sandbox ")
        )
        first = next(line for line in lines if "analytics: challenger" in line)
        model = next(line for line in lines if line.startswith("model "))
        at_risk = next(line for line in lines if line.startswith("at risk "))
        # Whatever the verdict on this world, the summary says the same as the gate.
        if "promoted to champion" in first:
            assert "delay_model_gate passed" in first and model.startswith("model      champion ")
            assert "(0 scored)" not in at_risk
        else:
            assert "delay_model_gate" in first and "passed" not in first
            assert model.startswith("model      no champion yet") and "(0 scored)" in at_risk
    finally:
        drop_database(pg_url, demo_db)


def test_the_main_job_ingests_through_dagster_twice_and_summarises(pg_url: str, tmp_path: Path) -> None:
    demo_db = f"{make_url(pg_url).database}_demo"
    result = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "demo", "--orders", "300"],
        cwd=ROOT,
        env={**os.environ, "BUFFALO_PG_URL": pg_url, "BUFFALO_DEMO_DB": demo_db},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    run1 = next(line for line in lines if line.startswith("run 1"))
    assert "300 orders (300 new" in run1 and "fetched 300: 300 new versions" in run1 and "0 failed" in run1
    assert any(line.startswith("run 2") for line in lines)
    assert sum("checks 11/11 passed" in line for line in lines) == 2
    # 300 orders are too few to judge a delay model: the demo says so, never "passed", no trace.
    analytics = [line for line in lines if "analytics: " in line]
    assert len(analytics) == 2 and all("delay_model_gate not judged (WARN)" in line for line in analytics)
    assert "not judged: too few test orders" in analytics[0]
    assert any(line.startswith("model      no champion yet") for line in lines)
    assert "Traceback" not in result.stdout + result.stderr
    assert any(line.startswith("analytics  late share") for line in lines)
    assert any(line.startswith("at risk ") for line in lines)
    inbound = next(line for line in lines if line.startswith("inbound "))
    demo_url = make_url(pg_url).set(database=demo_db).render_as_string(hide_password=False)
    engine = sa.create_engine(demo_url)
    try:
        with engine.connect() as connection:
            orders, versions = connection.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM raw.order_ids), (SELECT count(*) FROM raw.order_versions)"
                )
            ).one()
        assert f"raw.order_ids {orders}, raw.order_versions {versions}, ops.fetch_errors 0" in result.stdout
        assert orders >= 300 and versions > orders
        # The demo says how many customer alerts the outbox would send, by reason.
        with engine.connect() as connection:
            reasons = dict(
                connection.execute(
                    sa.text("SELECT reason, count(*) FROM analytics.customer_alerts GROUP BY reason")
                ).all()
            )
        assert f"alerts     {sum(reasons.values())} customer alerts would be sent" in result.stdout
        alerts_line = next(line for line in lines if line.startswith("alerts "))
        assert all(f"{reason} {count}" in alerts_line for reason, count in reasons.items())
        # The inbound goods: the one with the most units in flight first.
        with engine.connect() as connection:
            top = connection.execute(
                sa.text(
                    "SELECT min(goods_name), sum(quantity) FROM analytics.inbound_stock "
                    "WHERE state = 'in_flight' GROUP BY goods ORDER BY 2 DESC, goods LIMIT 1"
                )
            ).one()
        assert f"goods in flight; most: {top[0]} {top[1]:,.0f} (R " in inbound, inbound
        # Both runs went through Dagster, whose run storage is that same database.
        with engine.connect() as connection:
            statuses = connection.execute(sa.text("SELECT status FROM runs")).scalars().all()
        assert statuses == ["SUCCESS", "SUCCESS"]
    finally:
        engine.dispose()
        drop_database(pg_url, demo_db)
        (ROOT / ".buffalo" / f"{demo_db}.sandbox.json").unlink(missing_ok=True)  # its world record


def test_after_the_demo_dev_demo_serves_its_world_again_and_a_ui_run_continues_the_story(
    pg_url: str, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`buffalo demo`, then what `buffalo dev --demo` starts: the demo's sandbox world again and the
    environment (and working folder) its Dagster processes get. A run launched there, like "Materialize
    all" in the UI, ingests and transforms through the demo's own Dagster instance without a failed
    order, even when the project's `.env` points at the real API and another database."""
    from buffalo_assets.cli._common import demo_world_path
    from buffalo_assets.cli.dev import demo_environment

    demo_db = f"{make_url(pg_url).database}_world"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BUFFALO_", "DAGSTER_"))}
    env = {**clean, "PYTHONPATH": str(checkout), "BUFFALO_PG_URL": pg_url, "BUFFALO_DEMO_DB": demo_db}
    for name in ("BUFFALO_BASE_URL", "BUFFALO_USERNAME", "BUFFALO_PASSWORD", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BUFFALO_HOME", str(checkout))
    monkeypatch.setenv("BUFFALO_PG_URL", pg_url)
    monkeypatch.setenv("BUFFALO_DEMO_DB", demo_db)
    world_path = demo_world_path()
    assert world_path == checkout / ".buffalo" / f"{demo_db}.sandbox.json"
    demo_url = make_url(pg_url).set(database=demo_db).render_as_string(hide_password=False)
    try:
        demo = subprocess.run(
            [str(checkout / ".venv" / "bin" / "buffalo"), "demo", "--orders", "200"],
            cwd=checkout, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr[-3000:]
        recorded = json.loads(world_path.read_text())
        assert recorded["orders"] == 200 and recorded["seed"] == 7 and recorded["advances"] == [86_400.0]
        assert "password" not in json.dumps(recorded)
        # The user then configures the real account: Dagster's CLI would load this over the environment.
        production_db = make_url(pg_url).set(database="buffalo_never_created")
        (checkout / ".env").write_text(
            "BUFFALO_BASE_URL=https://index.buffaloex.com\nBUFFALO_USERNAME=ops@solo.example\n"
            f"BUFFALO_PASSWORD=real-password\nBUFFALO_PG_URL={production_db.render_as_string(False)}\n"
        )
        monkeypatch.delenv("BUFFALO_PG_URL")  # as in the user's shell: the database is in .env now
        with demo_environment() as (sandbox_url, handed):
            assert handed["BUFFALO_BASE_URL"] == sandbox_url
            assert make_url(handed["BUFFALO_PG_URL"]).database == demo_db
            assert handed["DAGSTER_HOME"] == str(checkout / ".buffalo" / "dagster")
            # Where `buffalo dev` runs Dagster (the instance folder), as Dagster's own CLI.
            materialize = subprocess.run(
                [*MATERIALIZE[:-1], "order_ids,raw_orders,clean_orders,order_items,order_events"],
                cwd=handed["DAGSTER_HOME"], env=handed, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        output = materialize.stdout + materialize.stderr
        assert materialize.returncode == 0, output[-3000:]
        assert "could not be fetched" not in output and "real-password" not in output
        engine = sa.create_engine(demo_url)
        try:
            with engine.connect() as connection:
                statuses = connection.execute(sa.text("SELECT status FROM runs ORDER BY id")).scalars().all()
                failed = connection.execute(sa.text("SELECT count(*) FROM ops.fetch_errors")).scalar_one()
                unknown = connection.execute(
                    sa.text("SELECT count(*) FROM raw.order_ids i LEFT JOIN raw.orders o USING (order_id) "
                            "WHERE o.order_id IS NULL")
                ).scalar_one()  # fmt: skip
            assert statuses == ["SUCCESS", "SUCCESS", "SUCCESS"]  # the demo's two runs, then ours
            assert failed == 0 and unknown == 0
        finally:
            engine.dispose()
    finally:
        drop_database(pg_url, demo_db)


def test_dev_demo_without_a_recorded_demo_says_to_run_the_demo(pg_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "dev", "--demo"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "BUFFALO_PG_URL": pg_url, "BUFFALO_DEMO_DB": "buffalo_demo_never_run"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "buffalo_demo_never_run.sandbox.json is missing): run `buffalo demo`" in result.stderr


def test_the_package_license_is_an_spdx_expression_setuptools_accepts_without_deprecation() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # A TOML table (`{ text = ... }`) is deprecated by setuptools (warning at every install).
    assert project["project"]["license"] == "LicenseRef-Proprietary"
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first to read SPDX strings


def test_the_lock_pins_every_dependency_within_pyproject_and_the_venv_was_installed_from_it() -> None:
    import tomllib
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *(d for extra in project["optional-dependencies"].values() for d in extra),
    ]
    pinned: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, exact = line.partition("==")
            assert exact and canonicalize_name(name) not in pinned, line
            pinned[canonicalize_name(name)] = exact.strip()
    for requirement in map(Requirement, wanted):
        name = canonicalize_name(requirement.name)
        assert name in pinned, (
            f"{requirement.name} is in pyproject.toml but not in constraints.txt: run `make lock`"
        )
        assert requirement.specifier.contains(pinned[name], prereleases=True), (requirement, pinned[name])
    # `make install` used the lock: every pinned package is installed at that version.
    for name, exact in pinned.items():
        try:
            assert installed(name) == exact, f"{name} {installed(name)} installed, {exact} locked"
        except PackageNotFoundError:
            raise AssertionError(f"{name} is locked but not installed") from None
