"""Schema migrations: the baseline is release 0.1's schema, old databases upgrade in place.

Each test makes its own databases on the test server (real PostgreSQL) and drops them; the
BI views' date columns are read in the session's database, in a transaction rolled back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from buffalo_assets.checks.core import column_schema_unchanged
from buffalo_assets.storage.database import create_engine
from buffalo_assets.storage.migrations import (
    BASELINE,
    MIGRATIONS_DIR,
    SchemaVersionError,
    alembic_config,
    current_revision,
    describe_difference,
    head_revision,
    schema_differences,
    upgrade,
)
from buffalo_assets.storage.resource import PostgresResource
from buffalo_assets.storage.tables import clean_orders, order_items

ROOT = Path(__file__).resolve().parents[1]
RELEASE_0_1_SCHEMA = ROOT / "tests" / "fixtures" / "release_0_1_schema.sql"
SCHEMAS = ("raw", "core", "analytics", "ops")

NewDatabase = Callable[[], str]


@pytest.fixture
def new_database(pg_server_url: str) -> Iterator[NewDatabase]:
    """Make empty databases on the test server; all are dropped after the test."""
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def make() -> str:
        name = f"buffalo_migr_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as connection:
        for name in names:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def load_release_0_1(url: str) -> None:
    """Make the database release 0.1 made: its schema dump, run as any client would."""
    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username,
        password=parsed.password, dbname=parsed.database, **dict(parsed.query),
    )  # fmt: skip
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(RELEASE_0_1_SCHEMA.read_text())
    finally:
        connection.close()


def catalog(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Everything PostgreSQL knows about the platform's schemas, except Alembic's version table."""
    schemas = "('raw', 'core', 'analytics', 'ops')"
    not_version = "NOT (n.nspname = 'ops' AND c.relname LIKE 'alembic_version%')"
    queries = {
        "schemas": f"SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname IN {schemas}",
        "relations": f"""
            SELECT n.nspname, c.relname, c.relkind, c.relacl::text, obj_description(c.oid, 'pg_class')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN {schemas} AND {not_version}""",
        "columns": f"""
            SELECT n.nspname, c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
                   col_description(c.oid, a.attnum), a.attacl::text
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname IN {schemas} AND {not_version} AND a.attnum > 0 AND NOT a.attisdropped
              AND c.relkind IN ('r', 'p', 'v', 'm')""",
        "constraints": f"""
            SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
            FROM pg_constraint k
            JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN {schemas} AND {not_version}""",
        "indexes": f"SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname IN {schemas} "
        "AND tablename <> 'alembic_version'",
        "views": f"SELECT schemaname, viewname, definition FROM pg_views WHERE schemaname IN {schemas}",
        "sequences": f"""
            SELECT schemaname, sequencename, data_type::text, start_value, min_value, max_value,
                   increment_by, cycle, cache_size
            FROM pg_sequences WHERE schemaname IN {schemas}""",
        "functions": f"""
            SELECT n.nspname, p.proname, pg_get_functiondef(p.oid)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN {schemas}""",
        "default_privileges": "SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, "
        "defaclobjtype, defaclacl::text FROM pg_default_acl",
    }
    with engine.connect() as connection:
        return {
            name: sorted(tuple(row) for row in connection.execute(sa.text(sql)))
            for name, sql in queries.items()
        }


ROWS = [
    "INSERT INTO raw.order_ids VALUES ('31000001', now() - interval '2 days', now()), "
    "('31000002', now(), now())",
    "INSERT INTO raw.order_versions VALUES "
    "('31000001', '{\"statusname\": \"Delivered\"}', 'hash-1b', now() - interval '1 day', now(), 'run-2'), "
    "('31000001', '{\"statusname\": \"In transit\"}', 'hash-1a', now() - interval '2 days', "
    "now() - interval '1 day', 'run-1'), "
    '(\'31000002\', \'{"statusname": "Processing", "note": "quotes \'\' and ; unicode \u00e9"}\', '
    "'hash-2', now(), now(), NULL)",
    "INSERT INTO ops.fetch_errors (order_id, kind, http_status, message, run_id) VALUES "
    "('31000003', 'http', 503, 'Service Unavailable', 'run-1'), ('31000004', 'timeout', NULL, 'slow', NULL)",
    "INSERT INTO ops.list_walks (run_id, walked_at, full_walk, pages, ids_seen, new_ids) VALUES "
    "('run-1', now(), true, 3, 42, 42), ('run-2', now(), false, 1, 15, 0)",
    "INSERT INTO core.clean_orders (order_id, stage, is_terminal, box_count, item_count, event_count, "
    "payload_sha256, transformed_at, cost_zar, delivered_at, city) VALUES "
    "('31000001', 'delivered', true, 2, 5, 7, 'hash-1b', now(), 123.45, now(), 'Cape Town'), "
    "('31000002', 'processing', false, 1, 1, 0, 'hash-2', now(), NULL, NULL, NULL)",
    "INSERT INTO core.order_items VALUES ('31000001', 1, 1, 'shoes', 2, 10.5, 11), "
    "('31000001', 2, 1, NULL, 3, NULL, NULL)",
    "INSERT INTO core.order_events VALUES ('31000001', 'e1', now() - interval '1 day', 'Dispatched', "
    "'dispatched'), ('31000001', 'e2', now(), 'Delivered', 'delivered')",
    "INSERT INTO ops.transform_errors (order_id, payload_sha256, reason, run_id) VALUES "
    "('31000009', 'corrupt', 'not an object', 'run-2')",
]
TABLES = (
    "raw.order_ids", "raw.order_versions", "raw.orders", "ops.fetch_errors", "ops.list_walks",
    "core.clean_orders", "core.order_items", "core.order_events", "ops.transform_errors",
)  # fmt: skip


Contents = dict[str, tuple[list[str], list[tuple[object, ...]]]]


def contents(engine: sa.Engine, like: Contents | None = None) -> Contents:
    """Every table's rows; with `like`, only the columns it has (later migrations may add some)."""
    found: Contents = {}
    with engine.connect() as connection:
        for table in TABLES:
            columns = ", ".join(like[table][0]) if like else "*"
            result = connection.execute(sa.text(f"SELECT {columns} FROM {table}"))
            found[table] = (list(result.keys()), sorted((tuple(row) for row in result), key=repr))
    return found


def buffalo(*args: str, pg_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", *args],
        env={**os.environ, "BUFFALO_PG_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_fresh_database_upgrades_to_the_head_and_matches_tables_py_exactly(
    new_database: NewDatabase,
) -> None:
    engine = create_engine(new_database())
    try:
        result = upgrade(engine)
        assert (result.before, result.after, result.stamped_baseline) == (None, head_revision(), False)
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
            differences = schema_differences(connection)
            # A change to tables.py without a migration for it fails here, naming the change.
            assert not differences, [describe_difference(d, connection.dialect) for d in differences]
        assert not upgrade(engine).changed
    finally:
        engine.dispose()


def test_the_baseline_migration_creates_exactly_what_release_0_1_created(new_database: NewDatabase) -> None:
    old, new = create_engine(new_database()), create_engine(new_database())
    try:
        load_release_0_1(old.url.render_as_string(hide_password=False))
        with new.begin() as connection:
            connection.execute(sa.text("CREATE SCHEMA ops"))
            command.upgrade(alembic_config(connection), BASELINE)
        expected, created = catalog(old), catalog(new)
        for part in expected:
            assert created[part] == expected[part], part
        assert ("raw", "orders") in {(s, v) for s, v, _ in created["views"]}
    finally:
        old.dispose()
        new.dispose()


def test_a_release_0_1_database_upgrades_in_place_keeping_every_row(new_database: NewDatabase) -> None:
    url = new_database()
    load_release_0_1(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in ROWS:
                connection.execute(sa.text(statement))
            # Dagster keeps its own alembic_version in public of the same database.
            connection.execute(sa.text("CREATE TABLE public.alembic_version (version_num text PRIMARY KEY)"))
            connection.execute(sa.text("INSERT INTO public.alembic_version VALUES ('dagster-revision')"))
        before = contents(engine)
        assert all(rows for _, rows in before.values())

        upgraded = buffalo("db", "upgrade", pg_url=url)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "found the tables of release 0.1 without a version table: stamped baseline 0001" in (
            upgraded.stdout
        )
        assert contents(engine, like=before) == before
        with engine.connect() as connection:
            observed = connection.execute(
                sa.text("SELECT order_id, payload_sha256 FROM raw.order_observations ORDER BY 1, fetched_at")
            ).all()
        # Migration 0003: each stored version is an observation, the current one last.
        assert [tuple(row) for row in observed] == [
            ("31000001", "hash-1a"),
            ("31000001", "hash-1b"),
            ("31000002", "hash-2"),
        ]
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
            assert not schema_differences(connection)
            dagster_revision = connection.execute(sa.text("SELECT version_num FROM public.alembic_version"))
            assert dagster_revision.scalar_one() == "dagster-revision"
        with engine.begin() as connection:  # identity columns go on counting after the kept rows
            insert = "INSERT INTO ops.fetch_errors (order_id, kind, message) VALUES ('x', 'k', 'm')"
            new_id = connection.execute(sa.text(insert + " RETURNING id")).scalar_one()
        assert new_id == 3

        again = buffalo("db", "init", pg_url=url)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [
            "`buffalo db init` is the same as `buffalo db upgrade`",
            f"schema of {url} is at head {head_revision()}; nothing to do",
        ]
    finally:
        engine.dispose()


def test_a_database_at_an_unknown_newer_revision_is_refused_with_a_clear_error(
    new_database: NewDatabase,
) -> None:
    url = new_database()
    engine = create_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE ops.alembic_version SET version_num = '0099'"))
        result = buffalo("db", "upgrade", pg_url=url)
        assert result.returncode != 0
        assert "is at schema revision '0099', which this code does not know" in result.stderr
        assert "a newer release of buffalo_assets upgraded it" in result.stderr
        with pytest.raises(SchemaVersionError, match="'0099'"):
            upgrade(engine)
    finally:
        engine.dispose()


def test_a_database_with_only_part_of_release_0_1s_tables_is_refused_naming_the_missing_ones(
    new_database: NewDatabase,
) -> None:
    url = new_database()
    load_release_0_1(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE ops.list_walks"))
        with pytest.raises(SchemaVersionError, match=r"lacks ops\.list_walks"):
            upgrade(engine)
        with engine.connect() as connection:
            assert current_revision(connection) is None  # nothing was stamped
    finally:
        engine.dispose()


def test_processes_starting_together_upgrade_a_fresh_database_once(new_database: NewDatabase) -> None:
    url = new_database()
    results: list[object] = []
    start = threading.Barrier(4)

    def start_up() -> None:
        engine = create_engine(url)  # each "process" has its own engine and connections
        try:
            start.wait()
            results.append(upgrade(engine))
        except Exception as error:  # collected: asserted below, not lost in the thread
            results.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.before is None for r in results) == [False, False, False, True]  # type: ignore[attr-defined]


def test_at_the_head_a_start_up_costs_one_query(new_database: NewDatabase) -> None:
    url = new_database()
    upgrade(create_engine(url))
    engine = sa.create_engine(url)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))
    try:
        assert not upgrade(engine).changed
    finally:
        engine.dispose()
    assert statements == ["SELECT version_num FROM ops.alembic_version"]


def test_the_drift_check_names_each_difference_and_fails_when_not_at_the_head(
    new_database: NewDatabase,
) -> None:
    url = new_database()
    engine = create_engine(url)
    upgrade(engine)
    postgres = PostgresResource(url=url)
    items_check, orders_check = column_schema_unchanged(order_items), column_schema_unchanged(clean_orders)
    try:
        assert items_check(postgres=postgres).passed
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE core.order_items ALTER COLUMN quantity TYPE text"))
            connection.execute(sa.text("ALTER TABLE core.order_items ADD COLUMN surprise int"))
        drifted = items_check(postgres=postgres)
        assert not drifted.passed
        assert drifted.description is not None
        assert "core.order_items.quantity: type declared bigint, found text" in drifted.description
        assert "core.order_items.surprise: declared absent, found integer" in drifted.description
        assert orders_check(postgres=postgres).passed  # other tables are not blamed

        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM ops.alembic_version"))
        behind = orders_check(postgres=postgres)
        assert not behind.passed
        assert f"database at schema revision none, migration head is {head_revision()}" in (
            behind.description or ""
        )
    finally:
        engine.dispose()


def test_db_revision_writes_nothing_when_tables_py_matches_the_head(pg_url: str) -> None:
    from buffalo_assets.cli import main

    before = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    result = CliRunner().invoke(main, ["db", "revision", "-m", "nothing"], env={"BUFFALO_PG_URL": pg_url})
    assert result.exit_code == 0, result.output
    assert "matches the migration head: no migration written" in result.output
    assert sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py")) == before


def test_migration_0009_downgrades_to_0008s_views_and_upgrades_again(new_database: NewDatabase) -> None:
    engine = create_engine(new_database())
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE SCHEMA ops"))
            command.upgrade(alembic_config(connection), "0008")
        at_0008 = catalog(engine)
        upgrade(engine)
        at_head = catalog(engine)
        assert at_head["views"] != at_0008["views"]
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0008")
        assert catalog(engine) == at_0008
        assert upgrade(engine).after == head_revision() and catalog(engine) == at_head
    finally:
        engine.dispose()


SAST_MOMENTS = re.compile(r"(\w+)_at(_p90)?$")


def test_every_timestamp_of_the_bi_views_has_its_south_african_date(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        columns = connection.execute(
            sa.text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'analytics' AND table_name LIKE 'bi\\_%' "
                "ORDER BY table_name, ordinal_position"
            )
        ).all()
    types = {(view, column): kind for view, column, kind in columns}
    moments = [(view, column) for view, column, kind in columns if kind == "timestamp with time zone"]
    keyed = [(v, c) for v, c in moments if SAST_MOMENTS.match(c)]
    assert len(keyed) >= 30
    missing = [
        f"{view}.{column}"
        for view, column in keyed
        if types.get((view, SAST_MOMENTS.sub(r"\1\2_date_sast", column))) != "date"
    ]
    assert not missing, f"timestamps without a <x>_date_sast date column: {missing}"
    # The others are when a row was computed, or a model's training window.
    assert {c for v, c in moments if (v, c) not in keyed} == {"as_of", "training_from", "training_until"}


def test_a_moment_after_22_00_utc_is_on_the_next_south_african_day_in_the_bi_views(
    engine: sa.Engine,
) -> None:
    late, early = "2026-03-01 22:00:01+00", "2026-03-01 21:59:59+00"
    with engine.connect() as connection, connection.begin() as transaction:
        try:
            for statement in (
                "INSERT INTO analytics.order_status_now (order_id, stage, created_at, promised_delivery_at, "
                "declared_value_zar, as_of) VALUES ('sast-1', 'customs', :late, :early, 100, now())",
                "INSERT INTO analytics.order_delay_risk (order_id, p_late, scored_at, promised_delivery_at) "
                "VALUES ('sast-1', 0.9, :late, :early)",
                "INSERT INTO analytics.customer_alerts (order_id, reason, alert_id, detail, message, "
                "created_at, sent_at, attempts) VALUES ('sast-1', 'at_risk', 'sast-1:at_risk', '{}', 'm', "
                ":early, :late, 1)",
            ):
                connection.execute(sa.text(statement), {"late": late, "early": early})
            read = connection.execute(
                sa.text(
                    "SELECT s.created_date_sast, s.promised_delivery_date_sast, r.scored_date_sast, "
                    "w.alerted_date_sast, w.promised_delivery_date_sast, a.created_date_sast, "
                    "a.sent_date_sast, s.delivered_date_sast "
                    "FROM analytics.bi_order_status s JOIN analytics.bi_order_delay_risk r USING (order_id) "
                    "JOIN analytics.bi_delay_worklist w USING (order_id) "
                    "JOIN analytics.bi_customer_alerts a USING (order_id) WHERE order_id = 'sast-1'"
                )
            ).one()
        finally:
            transaction.rollback()
    next_day, same_day = date(2026, 3, 2), date(2026, 3, 1)
    assert tuple(read) == (next_day, same_day, next_day, next_day, same_day, same_day, next_day, None)
