"""The project as users meet it: definitions load, the CLI and the main job work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from dagster import Definitions
from sqlalchemy.engine import make_url

from buffalo_assets.storage.database import drop_database

ROOT = Path(__file__).resolve().parents[1]


def dagster_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.local.yaml").read_text())
    return {**os.environ, "BUFFALO_PG_URL": pg_url, "DAGSTER_HOME": str(home)}


def test_definitions_load_with_the_buffalo_resource() -> None:
    from buffalo_assets.definitions import defs

    assert isinstance(defs, Definitions)
    resources = defs.resources or {}
    assert "buffalo" in resources


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
    assert sum("model_beats_the_naive_baseline passed" in line for line in lines) == 2
    assert any(line.startswith("analytics  late share") for line in lines)
    assert any(line.startswith("at risk ") for line in lines)
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
        # Both runs went through Dagster, whose run storage is that same database.
        with engine.connect() as connection:
            statuses = connection.execute(sa.text("SELECT status FROM runs")).scalars().all()
        assert statuses == ["SUCCESS", "SUCCESS"]
    finally:
        engine.dispose()
        drop_database(pg_url, demo_db)
