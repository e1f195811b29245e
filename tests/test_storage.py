"""The database wiring: schemas from migrations, the latest-version view, the embedded server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

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
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
        assert EmbeddedPostgres(tmp_path / "pg").ensure_running() == url  # reused, same port
    finally:
        assert server.stop()
    assert not server.is_running()
