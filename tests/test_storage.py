"""The database wiring: schemas from migrations, the latest-version view, the embedded server."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from buffalo_assets.storage.database import normalize_url, safe_url
from buffalo_assets.storage.embedded import EmbeddedPostgres
from buffalo_assets.storage.migrations import upgrade
from buffalo_assets.storage.tables import SCHEMAS


def test_schemas_and_tables_are_created_idempotently(engine: sa.Engine) -> None:
    upgrade(engine)
    assert not upgrade(engine).changed
    inspector = sa.inspect(engine)
    assert set(SCHEMAS) <= set(inspector.get_schema_names())
    assert {"order_ids", "order_versions"} <= set(inspector.get_table_names(schema="raw"))
    assert "orders" in inspector.get_view_names(schema="raw")
    assert "fetch_errors" in inspector.get_table_names(schema="ops")
    primary_key = inspector.get_pk_constraint("order_versions", schema="raw")
    assert primary_key["constrained_columns"] == ["order_id", "payload_sha256"]


def test_raw_orders_shows_the_most_recently_fetched_version(engine: sa.Engine) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [  # A -> B -> back to A: A is current again although it was first stored earliest
        ("view-test", '{"statusname": "A"}', "hash-a", t0, t0 + timedelta(hours=2)),
        ("view-test", '{"statusname": "B"}', "hash-b", t0 + timedelta(hours=1), t0 + timedelta(hours=1)),
    ]
    with engine.begin() as connection:
        for order_id, payload, digest, first, last in rows:
            connection.execute(
                sa.text("INSERT INTO raw.order_versions VALUES (:o, CAST(:p AS jsonb), :h, :f, :l, 'test')"),
                {"o": order_id, "p": payload, "h": digest, "f": first, "l": last},
            )
    with engine.connect() as connection:
        current = connection.execute(
            sa.text("SELECT payload->>'statusname' FROM raw.orders WHERE order_id = 'view-test'")
        ).scalar_one()
    assert current == "A"


def test_urls_are_normalised_to_psycopg2_and_printed_without_passwords() -> None:
    assert normalize_url("postgres://u:pw@db:5432/x") == "postgresql+psycopg2://u:pw@db:5432/x"
    assert normalize_url("postgresql://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert "pw" not in safe_url("postgresql+psycopg2://u:pw@db/x")
    with pytest.raises(ValueError, match="must be a PostgreSQL URL"):
        normalize_url("mysql://u:pw@db/x")


def test_the_embedded_server_starts_on_tcp_and_is_reused(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        url = server.ensure_running()
        assert url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
        # No password in the URL: it names the owner-only file libpq reads the password from.
        assert make_url(url).password is None and make_url(url).query["passfile"] == str(server.passfile)
        for secret in (server.passfile, tmp_path / "pg" / "password"):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
        assert EmbeddedPostgres(tmp_path / "pg").ensure_running() == url  # reused, same port
    finally:
        assert server.stop()
    assert not server.is_running()


AS_ANOTHER_USER = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("psql"),
    reason="trying another OS user takes root, runuser and psql (CI runs as root)",
)


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )  # fmt: skip


def _nobody_gets_in(server: EmbeddedPostgres) -> list[str]:
    """Every way another user of the machine might try: TCP and socket, any role name."""
    ways = []
    for host in ("127.0.0.1", str(server._socket_dir())):
        for role in ("postgres", "pgserver", "nobody"):
            tried = _as_nobody(
                "psql",
                "-w",
                "-h",
                host,
                "-p",
                str(server.port()),
                "-U",
                role,
                "-d",
                "postgres",
                "-c",
                "SELECT 1",
            )
            if tried.returncode == 0:
                ways.append(f"{role}@{host}")
    return ways


@AS_ANOTHER_USER
def test_another_user_of_the_machine_cannot_connect_to_the_embedded_server(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        url = server.ensure_running()
        assert _nobody_gets_in(server) == []
        assert _as_nobody("cat", str(server.passfile)).returncode != 0
        # Its owner, and every platform command through the URL, still does.
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT current_user")).scalar() == "postgres"
        engine.dispose()
    finally:
        server.stop()


@AS_ANOTHER_USER
def test_an_embedded_server_made_by_an_earlier_version_is_locked_in_place_keeping_its_data(
    tmp_path: Path,
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        engine = sa.create_engine(server.ensure_running())
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE kept (x int)"))
            connection.execute(sa.text("INSERT INTO kept VALUES (42)"))
        engine.dispose()
        # What earlier versions made: `trust` for everyone, no password files.
        (server.pgdata / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        server._pg_ctl(server._system_user(), "reload")
        for secret in (server.passfile, tmp_path / "pg" / "password"):
            secret.unlink()
        assert _nobody_gets_in(server) != [], "the old server admits anyone"
        server.stop()

        engine = sa.create_engine(EmbeddedPostgres(tmp_path / "pg").ensure_running())
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT x FROM kept")).scalar() == 42
        engine.dispose()
        assert _nobody_gets_in(server) == []
        assert "trust" not in (server.pgdata / "pg_hba.conf").read_text()
        assert any("required a password" in change for change in server.root_changes())
    finally:
        server.stop()
