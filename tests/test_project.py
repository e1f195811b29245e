"""The project as users meet it: definitions load, the CLI and the main job work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions

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


def test_the_main_job_logs_in_lists_and_fetches(pg_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", "demo", "--orders", "300", "--details", "20"],
        cwd=ROOT,
        env={**os.environ, "BUFFALO_PG_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "order list 300 ids" in result.stdout
    assert "details    20 fetched, 0 failed" in result.stdout
