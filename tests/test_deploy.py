"""The server deployment validates statically: compose file, Dockerfiles, instance config."""

from __future__ import annotations

import os
import re
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


def compose_services(dotenv: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker compose config` of the project's compose file: the services as compose sees them.

    `dotenv`: more variables, as an operator's .env would set them.
    """
    result = subprocess.run(
        [*compose_command(), "-f", "docker-compose.yml", "config"],
        cwd=ROOT, env={**COMPOSE_ENV, **(dotenv or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_the_compose_file_validates_with_every_service_and_the_sandbox_behind_a_profile() -> None:
    services = compose_services()
    airflow = {"airflow-db", "airflow-init", "airflow-api-server", "airflow-scheduler"}
    airflow |= {"airflow-dag-processor", "airflow-triggerer"}
    assert set(services) == {"postgres", "user-code", "webserver", "daemon", "sandbox", "proxy"} | airflow
    assert {name for name, service in services.items() if service.get("profiles")} == {"sandbox", "proxy"}
    assert services["sandbox"]["profiles"] == ["sandbox"] and services["proxy"]["profiles"] == ["auth"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(str(p.get("host_ip", p) if isinstance(p, dict) else p).startswith("127.0.0.1")
                             for p in published)  # fmt: skip
    assert services["webserver"]["environment"]["BUFFALO_PASSWORD"] == "pw"  # from .env, not baked in


def _published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each port a service publishes, as either compose writes them."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
        else:
            address, published, _ = str(port).rsplit(":", 2)
            ports.append((address, published))
    return ports


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Each volume's target: its source and whether it is read-only, as either compose writes them."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = (str(volume["source"]), bool(volume.get("read_only")))
        else:
            source, target, *options = str(volume).split(":")
            mounts[target] = (source, "ro" in options)
    return mounts


def test_postgres_is_published_on_loopback_unless_opened_for_power_bi_and_always_speaks_tls() -> None:
    assert _published(compose_services()["postgres"]) == [("127.0.0.1", "5432")]
    # An operator's .env opens it to the analysts' network; nothing else moves.
    opened = compose_services({"BUFFALO_PG_PUBLISH": "10.20.0.5"})
    postgres = opened["postgres"]
    assert _published(postgres) == [("10.20.0.5", "5432")]
    others = [port for name, service in opened.items() if name != "postgres" for port in _published(service)]
    assert others and all(address == "127.0.0.1" for address, _ in others)
    # TLS on, TLS 1.2 at least, the shipped pg_hba.conf (tests/test_bi_tls.py runs a server with
    # exactly these settings), and the certificate put in place by tls-init.sh.
    assert postgres["entrypoint"] == ["bash", "/etc/buffalo/postgres/tls-init.sh"]
    command = postgres["command"]
    for setting in (
        "hba_file=/etc/buffalo/postgres/pg_hba.conf",
        "ssl=on",
        "ssl_cert_file=/var/lib/postgresql/tls/server.crt",
        "ssl_key_file=/var/lib/postgresql/tls/server.key",
        "ssl_min_protocol_version=TLSv1.2",
    ):
        assert command[command.index(setting) - 1] == "-c", setting
    mounts = _mounts(postgres)
    assert mounts["/etc/buffalo/postgres"] == (str(ROOT / "deploy" / "postgres"), True)
    assert mounts["/etc/buffalo/certs"] == (str(ROOT / "deploy" / "certs"), True)
    assert mounts["/var/lib/postgresql/data"][0].endswith("pgdata")


def test_the_certificates_folder_is_there_to_mount_and_keeps_keys_out_of_git() -> None:
    # Present in a fresh clone (so Docker does not make it, as root), and nothing made in it
    # is ever committed.
    assert (ROOT / "deploy" / "certs" / ".gitignore").is_file()
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT, input="deploy/certs/server.key\ndeploy/certs/ca.key\ndeploy/certs/.gitignore\n",
        capture_output=True, text=True,
    )  # fmt: skip
    assert ignored.stdout.split() == ["deploy/certs/server.key", "deploy/certs/ca.key"]


def test_a_setting_still_set_by_its_old_name_reaches_the_dagster_processes_in_compose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buffalo_assets import settings

    hook = "https://hooks.example/services/T0K3N"
    old_names = {"BUFFALO_ALERT_WEBHOOK": hook, "BUFFALO_ALERT_COOLDOWN_HOURS": "48"}
    services = compose_services(old_names)
    for name in ("user-code", "webserver", "daemon"):
        environment = services[name]["environment"]
        assert environment["BUFFALO_ALERT_WEBHOOK"] == hook, name
        # No default from compose under the new names: nothing contradicts the old ones.
        assert not environment["BUFFALO_OPS_ALERT_WEBHOOK"], name
        assert not environment["BUFFALO_CUSTOMER_ALERT_COOLDOWN_HOURS"], name
    # What the daemon's sensors read from that environment: the old names' values.
    for key in list(os.environ):
        if key.startswith("BUFFALO_"):
            monkeypatch.delenv(key)
    for key, value in services["daemon"]["environment"].items():
        if key.startswith("BUFFALO_"):
            monkeypatch.setenv(key, value or "")
    monkeypatch.setenv("BUFFALO_HOME", str(tmp_path))
    current = settings.load()
    assert current.ops_alert_webhook is not None and current.ops_alert_webhook.get_secret_value() == hook
    assert current.customer_alert_cooldown_hours == 48
    assert current.customer_alert_max_attempts == 8  # unset under either name: the default
    assert set(current.renamed_in_use) == set(old_names)


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
    assert "USER " in text
    if dockerfile == "deploy/airflow.Dockerfile":
        # The official image of the Airflow version the tests run, its official constraints, and
        # the provider installed by pip (no plugins folder).
        pinned = re.search(
            r"^apache-airflow==(\S+)$", (ROOT / "airflow" / "requirements.txt").read_text(), re.M
        )
        assert pinned is not None
        assert f"ARG AIRFLOW_VERSION={pinned.group(1)}\n" in text
        assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in text
        assert "raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/" in text
        assert "COPY --chown=airflow:root airflow/provider" in text and "plugins" not in text
    else:
        assert "slim" in text
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


CADDY = shutil.which("caddy")
needs_caddy = pytest.mark.skipif(
    CADDY is None and os.environ.get("CI") != "true", reason="caddy is not installed (apt-get install caddy)"
)


def test_the_auth_profile_puts_the_proxy_before_both_uis_and_it_refuses_to_start_without_a_password() -> None:
    proxy = compose_services()["proxy"]
    assert {
        str(p["target"] if isinstance(p, dict) else p).split(":")[-1].split("/")[0] for p in proxy["ports"]
    } == {
        "3443",
        "8443",
    }
    assert any(str(v).endswith(":/etc/caddy/Caddyfile:ro") for v in proxy["volumes"]) or any(
        isinstance(v, dict) and v.get("target") == "/etc/caddy/Caddyfile" for v in proxy["volumes"]
    )
    assert set(proxy["depends_on"]) == {"webserver", "airflow-api-server"}
    if CADDY is None:
        if os.environ.get("CI") == "true":
            pytest.fail("caddy is not installed on the CI machine (.ci/run installs Debian's caddy)")
        pytest.skip("caddy is not installed (apt-get install caddy): the Caddyfile is not validated here")
    refused = subprocess.run(
        [CADDY, "validate", "--adapter", "caddyfile", "--config", "deploy/Caddyfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PROXY_PASSWORD_HASH": ""},
    )  # fmt: skip
    assert refused.returncode != 0 and "password cannot be empty" in refused.stderr


@needs_caddy
def test_the_proxy_asks_for_the_login_over_tls_and_only_then_shows_the_ui(tmp_path: Path) -> None:
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    class Ui(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = b"the dagster ui"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Ui)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    assert CADDY is not None
    hashed = subprocess.run(
        [CADDY, "hash-password", "--plaintext", "correct horse"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"), "PROXY_PASSWORD_HASH": hashed,
        "DAGSTER_PROXY_PORT": str(ports[0]), "AIRFLOW_PROXY_PORT": str(ports[1]),
        "DAGSTER_UPSTREAM": f"127.0.0.1:{upstream.server_port}",
        "AIRFLOW_UPSTREAM": f"127.0.0.1:{upstream.server_port}",
    }  # fmt: skip
    proxy = subprocess.Popen(
        [CADDY, "run", "--adapter", "caddyfile", "--config", str(ROOT / "deploy" / "Caddyfile")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    url = f"https://localhost:{ports[0]}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if root.exists():
                    requests.get(url, verify=str(root), timeout=5)
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proxy.poll() is None, "the proxy did not start"
            time.sleep(0.5)
        # TLS with the proxy's own CA; no login, or a wrong one: refused, the UI never reached.
        assert requests.get(url, verify=str(root), timeout=5).status_code == 401
        assert requests.get(url, verify=str(root), auth=("buffalo", "wrong"), timeout=5).status_code == 401
        shown = requests.get(url, verify=str(root), auth=("buffalo", "correct horse"), timeout=5)
        assert shown.status_code == 200 and shown.text == "the dagster ui"
        # Plain HTTP gets nothing.
        with pytest.raises(requests.RequestException):
            requests.get(url.replace("https", "http"), timeout=5).raise_for_status()
    finally:
        proxy.terminate()
        proxy.wait(30)
        upstream.shutdown()
