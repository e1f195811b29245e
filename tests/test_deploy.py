"""The server deployment validates statically: compose file, Dockerfiles, instance config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "x",
    "BUFFALO_USERNAME": "user",
    "BUFFALO_PASSWORD": "pw",
    "AIRFLOW_DB_PASSWORD": "apw",
    "AIRFLOW_SECRET_KEY": "k",
    "PATH": os.environ["PATH"],
    "HOME": os.environ.get("HOME", str(ROOT)),
}


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = (
        subprocess.run(["docker", "compose", "version"], capture_output=True)
        if shutil.which("docker")
        else None
    )
    if probe is not None and probe.returncode == 0:
        return ["docker", "compose"]
    if os.environ.get("CI") == "true":
        pytest.fail("no docker compose on the CI machine (.ci/run installs Debian's docker-compose)")
    pytest.skip("docker compose is not installed (apt-get install docker-compose)")


def compose_services() -> dict[str, Any]:
    """`docker compose config` of the project's compose file: the services as compose sees them."""
    result = subprocess.run(
        [*compose_command(), "-f", "docker-compose.yml", "config"],
        cwd=ROOT, env=COMPOSE_ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_the_compose_file_validates_with_every_service_and_the_sandbox_behind_a_profile() -> None:
    services = compose_services()
    airflow = {"airflow-db", "airflow-init", "airflow-api-server", "airflow-scheduler"}
    airflow |= {"airflow-dag-processor", "airflow-triggerer"}
    assert set(services) == {"postgres", "user-code", "webserver", "daemon", "sandbox"} | airflow
    assert {name for name, service in services.items() if service.get("profiles")} == {"sandbox"}
    assert services["sandbox"]["profiles"] == ["sandbox"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(str(p.get("host_ip", p) if isinstance(p, dict) else p).startswith("127.0.0.1")
                             for p in published)  # fmt: skip
    assert services["webserver"]["environment"]["BUFFALO_PASSWORD"] == "pw"  # from .env, not baked in


def test_the_compose_file_refuses_to_start_without_secrets() -> None:
    result = subprocess.run(
        [*compose_command(), "-f", "docker-compose.yml", "config"],
        cwd=ROOT, env={"PATH": os.environ["PATH"], "HOME": COMPOSE_ENV["HOME"]},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr + result.stdout


@pytest.mark.parametrize("dockerfile", ["deploy/Dockerfile", "deploy/airflow.Dockerfile"])
def test_the_dockerfiles_pass_hadolint_and_bake_in_no_secret(dockerfile: str) -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", dockerfile],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / dockerfile).read_text()
    assert "USER " in text and "slim" in text
    assert "PASSWORD" not in text.replace("BUFFALO_PASSWORD come from", "")


def test_the_deployment_instance_config_is_valid_for_dagster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
    for key in ("BUFFALO_PG_URL", "DAGSTER_CURRENT_IMAGE", "DAGSTER_DOCKER_NETWORK"):
        monkeypatch.setenv(key, "postgresql+psycopg2://u@h/db" if key == "BUFFALO_PG_URL" else "x")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["storage"]["custom"]["class"] == "PooledPostgresStorage"
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["location_name"] == "buffalo_assets"
