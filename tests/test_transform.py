"""The core tables, built from sandbox data through Dagster, against the sandbox's truth."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from dagster import AssetKey, AssetSelection, DagsterInstance, evaluate_automation_conditions

from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.checks.core import core_checks
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.faults import FaultPlan
from buffalo_assets.sandbox.orders import STREETS
from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import SandboxFactory
from tests.pipeline import EVERYTHING, INGESTION, check_results, metadata_of, run

TEN_DAYS_AGO = time.time() - 10 * 86_400  # so that moving the clock keeps events in the past
TRANSFORM = [transform_orders, *core_checks()]


def transform(pg_url: str, instance: DagsterInstance, **run_config: object):  # noqa: ANN201
    config = {"ops": {"transform_orders": {"config": run_config}}} if run_config else None
    result = run(None, pg_url, instance, TRANSFORM, run_config=config)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def rows(engine: sa.Engine, sql: str) -> list[sa.Row]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(sql)))


def second(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).replace(microsecond=0)


def assert_core_matches_truth(engine: sa.Engine, running: RunningSandbox) -> int:
    truth = {row["order_id"]: row for row in SandboxControl(running.url).truth() if not row["missing"]}
    clean = {r.order_id: r for r in rows(engine, "SELECT * FROM core.clean_orders")}
    events = dict(rows(engine, "SELECT order_id, count(*) FROM core.order_events GROUP BY 1"))
    items = {
        r.order_id: r
        for r in rows(
            engine,
            "SELECT order_id, sum(quantity) AS quantity, sum(quantity * declared_value) AS value "
            "FROM core.order_items GROUP BY 1",
        )
    }
    assert set(clean) == set(truth)
    for order_id, expected in truth.items():
        row = clean[order_id]
        assert row.stage == expected["stage"], order_id
        assert row.is_terminal == (expected["stage"] in {"delivered", "returned", "cancelled", "lost"})
        assert second(row.delivered_at) == second(expected["delivered_at"]), order_id
        assert row.event_count == events[order_id] == expected["event_count"], order_id
        assert row.item_count == items[order_id].quantity == expected["item_count"], order_id
        assert row.box_count == expected["box_count"]
        assert row.declared_value_zar == Decimal(str(expected["declared_total"])).quantize(Decimal("0.01"))
        assert row.province == expected["province"]
    return len(truth)


def test_core_tables_match_the_sandbox_truth_despite_faults_and_variations(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(
        orders=400,
        start=TEN_DAYS_AGO,
        variation_rate=0.4,
        faults=FaultPlan.mixed(0.1, retry_after_s=0.05, detail_envelope="mixed"),
    )
    result = run(running, pg_url, instance, EVERYTHING, max_attempts=8)
    assert result.success
    assert assert_core_matches_truth(empty_store, running) == 400
    checks = check_results(result)
    assert len(checks) == 11 and all(checks.values()), checks
    clean = metadata_of(result, "clean_orders")
    assert clean["dagster/row_count"] == clean["orders_transformed"] == 400
    assert clean["transform_errors"] == 0
    lineage = clean["dagster/column_lineage"].deps_by_column
    assert lineage["stage"][0].column_name == "payload.statusname"
    assert lineage["stage"][0].asset_key == AssetKey("raw_orders")
    preview = clean["preview"]
    assert "tracking_number" in preview and "BUFZA" in preview and "***" in preview
    assert not any(street in preview for street in STREETS)  # addresses are masked
    columns = {c.name: c.description for c in clean["dagster/column_schema"].columns}
    assert all(columns.values()), "every column is described"


def test_a_rerun_with_nothing_new_rewrites_no_row(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=150, start=TEN_DAYS_AGO)
    assert run(running, pg_url, instance, EVERYTHING).success
    snapshot = "SELECT {0}::text, ctid::text, xmin::text FROM core.{1} ORDER BY 1"
    tables = {"clean_orders": "order_id", "order_items": "order_id || box_index || line_index",
              "order_events": "order_id || event_id"}  # fmt: skip
    before = {t: rows(empty_store, snapshot.format(k, t)) for t, k in tables.items()}
    assert run(running, pg_url, instance, INGESTION).success  # unchanged payloads
    result = transform(pg_url, instance)
    assert metadata_of(result, "clean_orders")["orders_transformed"] == 0
    assert {t: rows(empty_store, snapshot.format(k, t)) for t, k in tables.items()} == before


def test_advancing_the_clock_retransforms_exactly_the_changed_orders(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=300, start=TEN_DAYS_AGO)
    assert run(running, pg_url, instance, EVERYTHING).success
    built_before = dict(rows(empty_store, "SELECT order_id, payload_sha256 FROM core.clean_orders"))
    running.sandbox.advance(2 * 86_400)
    result = run(running, pg_url, instance, EVERYTHING)
    assert result.success
    latest = dict(rows(empty_store, "SELECT order_id, payload_sha256 FROM raw.orders"))
    changed = {o for o, sha in latest.items() if built_before.get(o) != sha}
    assert changed and len(changed) < len(latest)
    assert metadata_of(result, "clean_orders")["orders_transformed"] == len(changed)
    assert dict(rows(empty_store, "SELECT order_id, payload_sha256 FROM core.clean_orders")) == latest
    assert_core_matches_truth(empty_store, running)
    assert all(check_results(result).values())


def test_a_corrupted_payload_is_quarantined_and_the_rest_still_lands(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=80, start=TEN_DAYS_AGO)
    assert run(running, pg_url, instance, INGESTION).success
    with empty_store.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO raw.order_versions VALUES "
                "('31000005', '[\"not\", \"an order\"]', 'corrupt-1', now(), now() + '1 h', 'test'), "
                "('31000006', '{\"unrelated\": true}', 'corrupt-2', now(), now() + '1 h', 'test')"
            )
        )
    result = run(None, pg_url, instance, TRANSFORM)
    assert result.success
    errors = {r.order_id: r.reason for r in rows(empty_store, "SELECT * FROM ops.transform_errors")}
    assert set(errors) == {"31000005", "31000006"}
    assert "not an object" in errors["31000005"] and "none of the order fields" in errors["31000006"]
    assert len(rows(empty_store, "SELECT order_id FROM core.clean_orders")) == 78
    assert check_results(result)["every_raw_order_is_transformed"]
    assert metadata_of(result, "clean_orders")["transform_errors"] == 2
    # A quarantined version is not retried until its payload changes.
    assert metadata_of(transform(pg_url, instance), "clean_orders")["orders_transformed"] == 0


BREAKAGES = {
    "clean_orders_primary_key_unique": [
        "ALTER TABLE core.clean_orders DROP CONSTRAINT clean_orders_pkey",
        "INSERT INTO core.clean_orders SELECT * FROM core.clean_orders LIMIT 1",
    ],
    "order_items_primary_key_unique": [
        "ALTER TABLE core.order_items DROP CONSTRAINT order_items_pkey",
        "INSERT INTO core.order_items SELECT * FROM core.order_items LIMIT 1",
    ],
    "order_events_primary_key_unique": [
        "ALTER TABLE core.order_events DROP CONSTRAINT order_events_pkey",
        "INSERT INTO core.order_events SELECT * FROM core.order_events LIMIT 1",
    ],
    "clean_orders_column_schema_unchanged": ["ALTER TABLE core.clean_orders ADD COLUMN surprise int"],
    "order_items_column_schema_unchanged": ["ALTER TABLE core.order_items ALTER COLUMN quantity TYPE text"],
    "order_events_column_schema_unchanged": ["ALTER TABLE core.order_events DROP COLUMN description"],
    "every_raw_order_is_transformed": ["DELETE FROM core.clean_orders WHERE order_id = '31000003'"],
    "weights_and_money_not_negative": [
        "UPDATE core.clean_orders SET cost_zar = -1 WHERE order_id = '31000003'"
    ],
    "delivered_at_iff_delivered": [
        "UPDATE core.clean_orders SET delivered_at = now() WHERE stage <> 'delivered' AND order_id IN "
        "(SELECT order_id FROM core.clean_orders WHERE stage <> 'delivered' LIMIT 1)"
    ],
    "quantities_and_values_not_negative": ["UPDATE core.order_items SET quantity = -2 WHERE line_index = 1"],
    "event_times_not_in_future": ["UPDATE core.order_events SET event_at = now() + interval '2 days'"],
}


@pytest.mark.parametrize("check", sorted(BREAKAGES))
def test_every_check_passes_on_good_data_and_fails_on_a_broken_row(
    check: str, start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=40, start=TEN_DAYS_AGO)
    assert run(running, pg_url, instance, EVERYTHING).success
    only_checks = AssetSelection.all_asset_checks()
    assert check_results(run(None, pg_url, instance, TRANSFORM, selection=only_checks))[check]
    try:
        with empty_store.begin() as connection:
            for statement in BREAKAGES[check]:
                connection.execute(sa.text(statement))
        results = check_results(run(None, pg_url, instance, TRANSFORM, selection=only_checks))
        assert results[check] is False
    finally:
        _restore_core(empty_store)


def _restore_core(engine: sa.Engine) -> None:
    """Put the declared core tables back exactly as declared (the breakages alter them)."""
    from buffalo_assets.storage.tables import clean_orders, order_events, order_items, transform_errors

    with engine.begin() as connection:
        for table in (clean_orders, order_items, order_events, transform_errors):
            table.drop(connection, checkfirst=True)
            table.create(connection)


def test_an_ingest_alone_makes_automation_request_the_core_tables(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    from buffalo_assets.definitions import defs

    running = start_sandbox(orders=20, start=TEN_DAYS_AGO)
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert run(running, pg_url, instance, INGESTION).success
    after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    for key in ("clean_orders", "order_items", "order_events"):
        assert after.get_num_requested(AssetKey(key)) == 1, key
    assert after.get_num_requested(AssetKey("raw_orders")) == 0  # ingestion runs on its schedule
