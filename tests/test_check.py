"""`buffalo check`, run as a user runs it (the console script, in a subprocess) against real sandboxes."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import sqlalchemy as sa

from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import ROOT, SandboxFactory

BUFFALO = str(ROOT / ".venv" / "bin" / "buffalo")
TABLES = ("raw.order_ids", "raw.order_versions", "ops.fetch_errors", "ops.list_walks")


def buffalo_check(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`buffalo check` in a project folder of its own (no .env), with only these BUFFALO_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BUFFALO_", "DAGSTER_"))}
    return subprocess.run(
        [BUFFALO, "check"],
        cwd=home,
        env={**clean, "BUFFALO_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def account(running: RunningSandbox, **overrides: str) -> dict[str, str]:
    config = running.sandbox.config
    return {
        "BUFFALO_BASE_URL": running.url,
        "BUFFALO_USERNAME": config.username,
        "BUFFALO_PASSWORD": config.password,
        **overrides,
    }


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in TABLES
        }


def test_check_logs_in_lists_a_page_fetches_an_order_and_stores_nothing(
    start_sandbox: SandboxFactory, pg_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    running = start_sandbox(orders=120)
    before = row_counts(engine)
    result = buffalo_check(tmp_path, BUFFALO_PG_URL=pg_url, **account(running))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"api        {running.url}" in out
    assert "login      ok as demo@solo.example" in out
    assert "orders     120 in the account; page 1 lists 15" in out
    newest = str(running.sandbox.book.order_id(119))
    assert f"detail     order {newest}: status '" in out and "tracking events" in out
    assert "answers" in out and "nothing was stored" in out
    # No personal data, no secret: not the address, not the password, no ticket the sandbox issued.
    detail = running.sandbox.book.detail(119, running.sandbox.now)
    assert detail["receiveaddress"] not in out + result.stderr
    for secret in {running.sandbox.config.password, *running.sandbox.secrets_seen}:
        assert secret not in out + result.stderr
    # Stores nothing: no row anywhere, no state folder, no file in the project folder.
    assert row_counts(engine) == before
    assert list(tmp_path.iterdir()) == []
    assert running.sandbox.stats["requests.detail"] == 1


def test_a_wrong_password_fails_with_one_line_naming_the_settings(
    start_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    running = start_sandbox(orders=30)
    result = buffalo_check(tmp_path, **account(running, BUFFALO_PASSWORD="not-the-password"))
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.count("\n") == 0
    assert error == (
        f"Error: login to {running.url} as 'demo@solo.example' was refused: Incorrect username or "
        "password; check BUFFALO_USERNAME and BUFFALO_PASSWORD"
    )
    assert "not-the-password" not in result.stdout + result.stderr
    assert "detail" not in result.stdout


def test_an_unreachable_host_fails_with_one_line_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = buffalo_check(
        tmp_path, BUFFALO_BASE_URL=url, BUFFALO_USERNAME="ops@solo.example", BUFFALO_PASSWORD="s3cret-pw"
    )
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.count("\n") == 0
    assert error.startswith(f"Error: cannot reach {url} (connection_error")
    assert error.endswith("check BUFFALO_BASE_URL and the network (proxy, VPN, firewall)")
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_missing_and_wrong_settings_are_named(tmp_path: Path, start_sandbox: SandboxFactory) -> None:
    missing = buffalo_check(tmp_path, BUFFALO_BASE_URL="https://index.buffaloex.com")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "Error: BUFFALO_USERNAME and BUFFALO_PASSWORD are not set: set them in .env (see .env.example) "
        "to use https://index.buffaloex.com"
    )
    running = start_sandbox(orders=10)
    wrong = buffalo_check(tmp_path, **account(running, BUFFALO_CONCURRENCY="sixteen"))
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("Error: wrong settings: BUFFALO_CONCURRENCY: ")
    (tmp_path / ".env").write_text("BUFFALO_PG_URL=postgresql://nobody:pw-in-env@127.0.0.1:1/buffalo\n")
    database = buffalo_check(tmp_path, **account(running))
    assert database.returncode == 1
    assert database.stderr.startswith(
        "Error: BUFFALO_PG_URL postgresql+psycopg2://nobody:***@127.0.0.1:1/buffalo"
    )
    assert "does not answer" in database.stderr and "pw-in-env" not in database.stdout + database.stderr
    assert f"{tmp_path / '.env'} read" in database.stdout
