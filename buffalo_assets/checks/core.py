"""Asset checks on the `core` tables: the rules an analyst relies on without re-checking.

Checks whose failure would mislead analysts are blocking: downstream assets do not run
on data that breaks them. Every check reports how many rows break the rule and a few
examples (order ids only: no personal data in check metadata).
"""

import sqlalchemy as sa
from dagster import AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, asset_check

from buffalo_assets.storage.core_store import CORE_TABLES
from buffalo_assets.storage.migrations import current_revision, head_revision, table_drift
from buffalo_assets.storage.resource import PostgresResource
from buffalo_assets.storage.tables import clean_orders, order_events, order_items

EXAMPLES = 5


def _violations(postgres: PostgresResource, count_sql: str, examples_sql: str) -> AssetCheckResult:
    with postgres.get_engine().connect() as connection:
        count = int(connection.execute(sa.text(count_sql)).scalar_one())
        examples = [str(v) for v in connection.execute(sa.text(examples_sql)).scalars()] if count else []
    return AssetCheckResult(
        passed=count == 0, metadata={"violations": count, "examples": ", ".join(examples)}
    )


def sql_rule_check(
    table: sa.Table,
    name: str,
    description: str,
    where: str,
    *,
    example: str = "order_id",
    blocking: bool = True,
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
) -> AssetChecksDefinition:
    """A check that passes when no row of `table` matches the SQL condition `where`."""
    qualified = f"{table.schema}.{table.name}"

    @asset_check(asset=table.name, name=name, description=description, blocking=blocking)
    def _check(postgres: PostgresResource) -> AssetCheckResult:
        result = _violations(
            postgres,
            f"SELECT count(*) FROM {qualified} WHERE {where}",
            f"SELECT {example} FROM {qualified} WHERE {where} LIMIT {EXAMPLES}",
        )
        return AssetCheckResult(passed=result.passed, metadata=result.metadata, severity=severity)

    return _check


def primary_key_unique(table: sa.Table) -> AssetChecksDefinition:
    keys = ", ".join(c.name for c in table.primary_key)
    qualified = f"{table.schema}.{table.name}"

    @asset_check(
        asset=table.name,
        name=f"{table.name}_primary_key_unique",
        description=f"No two rows share ({keys}).",
        blocking=True,
    )
    def _check(postgres: PostgresResource) -> AssetCheckResult:
        duplicates = f"SELECT {keys} FROM {qualified} GROUP BY {keys} HAVING count(*) > 1"
        return _violations(
            postgres,
            f"SELECT count(*) FROM ({duplicates}) AS d",
            f"SELECT concat_ws('/', {keys}) FROM ({duplicates}) AS d LIMIT {EXAMPLES}",
        )

    return _check


def column_schema_unchanged(table: sa.Table) -> AssetChecksDefinition:
    """The database is at the migration head and the live table is the head's (no manual DDL)."""

    @asset_check(
        asset=table.name,
        name=f"{table.name}_column_schema_unchanged",
        description="The database is at the newest schema migration, and the table's columns, types, "
        "nullability, defaults, comments and indexes in PostgreSQL match the declared schema.",
        blocking=True,
    )
    def _check(postgres: PostgresResource) -> AssetCheckResult:
        with postgres.get_engine().connect() as connection:
            differences = table_drift(connection, table)
            revision = current_revision(connection)
        summary = "; ".join(differences)
        return AssetCheckResult(
            passed=not differences,
            description=f"{table.schema}.{table.name} differs from the migration head: {summary}"
            if differences
            else None,
            metadata={
                "differences": summary or "none",
                "revision": revision or "none",
                "head": head_revision(),
            },
        )

    return _check


def _coverage_check() -> AssetChecksDefinition:
    @asset_check(
        asset="clean_orders",
        name="every_raw_order_is_transformed",
        description="Every order in raw.orders has a clean row built from its latest version, or a "
        "transform error recorded for that version.",
        blocking=True,
    )
    def _check(postgres: PostgresResource) -> AssetCheckResult:
        missing = """
            FROM raw.orders AS o
            LEFT JOIN core.clean_orders AS c
                   ON c.order_id = o.order_id AND c.payload_sha256 = o.payload_sha256
            LEFT JOIN ops.transform_errors AS e
                   ON e.order_id = o.order_id AND e.payload_sha256 = o.payload_sha256
            WHERE c.order_id IS NULL AND e.order_id IS NULL
        """
        return _violations(
            postgres, f"SELECT count(*) {missing}", f"SELECT o.order_id {missing} LIMIT {EXAMPLES}"
        )

    return _check


def core_checks() -> list[AssetChecksDefinition]:
    """Every check on the core tables."""
    non_negative = " OR ".join(
        f"{column} < 0"
        for column in (
            "weight_kg", "volumetric_weight_kg", "billed_weight_kg", "cost_zar", "duty_zar",
            "declared_value_zar", "days_in_transit",
        )
    )  # fmt: skip
    return [
        *(
            check
            for table in CORE_TABLES
            for check in (primary_key_unique(table), column_schema_unchanged(table))
        ),
        _coverage_check(),
        sql_rule_check(
            clean_orders,
            "weights_and_money_not_negative",
            "Weights, cost, duty, declared value and days in transit are never negative.",
            non_negative,
        ),
        sql_rule_check(
            clean_orders,
            "delivered_at_iff_delivered",
            "delivered_at is set exactly for orders whose stage is delivered.",
            "(stage = 'delivered') <> (delivered_at IS NOT NULL)",
        ),
        sql_rule_check(
            order_items,
            "quantities_and_values_not_negative",
            "Quantities and declared values are never negative.",
            "quantity < 0 OR declared_value < 0 OR actual_declared_value < 0",
        ),
        sql_rule_check(
            order_events,
            "event_times_not_in_future",
            "No tracking event is dated in the future (5 minutes of clock skew allowed).",
            "event_at > now() + interval '5 minutes'",
            blocking=False,
            severity=AssetCheckSeverity.WARN,
        ),
    ]
