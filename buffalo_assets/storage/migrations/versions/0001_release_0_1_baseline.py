"""Release 0.1's schema: the baseline every later migration builds on.

Exactly what release 0.1's `ensure_schema` created (tests/test_migrations.py compares the
catalog with a dump of it): a database made by that release is stamped at this revision
instead of running it. Frozen: never edit it; change tables in a new migration.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMAS = ("raw", "core", "analytics", "ops")
STAGE_CHECK = (
    "stage IN ('processing', 'dispatched', 'in_transit', 'arrived_hub', 'customs', "
    "'out_for_delivery', 'delivered', 'returned', 'cancelled', 'lost', 'unknown')"
)
LATEST_ORDERS_VIEW = """
CREATE OR REPLACE VIEW raw.orders AS
SELECT DISTINCT ON (order_id)
       order_id, payload, payload_sha256, first_fetched_at, last_fetched_at, run_id
FROM raw.order_versions
ORDER BY order_id, last_fetched_at DESC, first_fetched_at DESC
"""


def upgrade() -> None:
    for schema in SCHEMAS:
        # IF NOT EXISTS: upgrade() creates `ops` first, for Alembic's version table.
        op.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    op.create_table(
        "clean_orders",
        sa.Column("order_id", sa.Text(), nullable=False, comment="Buffalo order id"),
        sa.Column(
            "tracking_number",
            sa.Text(),
            nullable=True,
            comment="Buffalo tracking number, e.g. BUFZA1234567890YQ (expressnumber)",
        ),
        sa.Column(
            "third_party_number",
            sa.Text(),
            nullable=True,
            comment="Last-mile courier reference (thirdnumber)",
        ),
        sa.Column("status_text", sa.Text(), nullable=True, comment="Status in Buffalo's words (statusname)"),
        sa.Column("stage", sa.Text(), nullable=False, comment="Normalized journey stage (see README)"),
        sa.Column(
            "is_terminal",
            sa.Boolean(),
            nullable=False,
            comment="Delivered, returned, cancelled or lost: will not change",
        ),
        sa.Column(
            "pay_status", sa.Text(), nullable=True, comment="Shipping fee payment status (paystatusname)"
        ),
        sa.Column(
            "duty_status",
            sa.Text(),
            nullable=True,
            comment="Import duty/VAT payment status (taxpaystatusname)",
        ),
        sa.Column("address", sa.Text(), nullable=True, comment="Delivery address as given (personal data)"),
        sa.Column("street", sa.Text(), nullable=True, comment="Street part of the address"),
        sa.Column("suburb", sa.Text(), nullable=True, comment="Suburb part of the address"),
        sa.Column("city", sa.Text(), nullable=True, comment="City of delivery"),
        sa.Column("province", sa.Text(), nullable=True, comment="South African province of delivery"),
        sa.Column("postal_code", sa.Text(), nullable=True, comment="Four-digit postal code"),
        sa.Column("weight_kg", sa.Numeric(), nullable=True, comment="Weighed mass, kg (ascertainedweight)"),
        sa.Column(
            "volumetric_weight_kg",
            sa.Numeric(),
            nullable=True,
            comment="Volumetric mass, kg (ascertainedvolumweight)",
        ),
        sa.Column("billed_weight_kg", sa.Numeric(), nullable=True, comment="Billed weight, kg (finalweight)"),
        sa.Column(
            "cost_zar", sa.Numeric(), nullable=True, comment="Charged shipping cost, ZAR (ascertainedcost)"
        ),
        sa.Column("duty_zar", sa.Numeric(), nullable=True, comment="Duty/VAT collected, ZAR (receivedtax)"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Order created (createtimeStr, SAST)",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Order last updated (updatetimeStr, SAST)",
        ),
        sa.Column(
            "first_event_at", sa.DateTime(timezone=True), nullable=True, comment="Earliest tracking event"
        ),
        sa.Column(
            "delivered_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When delivered (delivered event); set iff stage is delivered",
        ),
        sa.Column(
            "days_in_transit",
            sa.Numeric(),
            nullable=True,
            comment="Days from first event to delivery (or end, or transformed_at)",
        ),
        sa.Column("box_count", sa.Integer(), nullable=False, comment="Boxes in the shipment"),
        sa.Column("item_count", sa.BigInteger(), nullable=False, comment="Declared items over all boxes"),
        sa.Column(
            "declared_value_zar",
            sa.Numeric(),
            nullable=True,
            comment="Declared value of the goods (unit value x quantity), ZAR",
        ),
        sa.Column("event_count", sa.Integer(), nullable=False, comment="Tracking events so far"),
        sa.Column("payload_sha256", sa.Text(), nullable=False, comment="Raw version this row was built from"),
        sa.Column(
            "transformed_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was built"
        ),
        sa.CheckConstraint(STAGE_CHECK, name="clean_orders_stage"),
        sa.PrimaryKeyConstraint("order_id"),
        schema="core",
        comment="One typed row per order, from its latest raw version.",
    )
    op.create_table(
        "order_events",
        sa.Column("order_id", sa.Text(), nullable=False, comment="Buffalo order id"),
        sa.Column(
            "event_id", sa.Text(), nullable=False, comment="Buffalo event id (or derived from time and text)"
        ),
        sa.Column(
            "event_at", sa.DateTime(timezone=True), nullable=True, comment="When it happened (createtime)"
        ),
        sa.Column("description", sa.Text(), nullable=True, comment="Event text (content)"),
        sa.Column("stage", sa.Text(), nullable=False, comment="Journey stage the text belongs to"),
        sa.CheckConstraint(STAGE_CHECK, name="order_events_stage"),
        sa.PrimaryKeyConstraint("order_id", "event_id"),
        schema="core",
        comment="Tracking events, deduplicated by event id, one row each.",
    )
    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Text(), nullable=False, comment="Buffalo order id"),
        sa.Column(
            "box_index", sa.Integer(), nullable=False, comment="Position of the box in boxList, from 1"
        ),
        sa.Column(
            "line_index",
            sa.Integer(),
            nullable=False,
            comment="Position of the line in the box's detaillist, from 1",
        ),
        sa.Column(
            "description", sa.Text(), nullable=True, comment="Goods description, when given (goodsname)"
        ),
        sa.Column("quantity", sa.BigInteger(), nullable=True, comment="Declared quantity (number)"),
        sa.Column(
            "declared_value", sa.Numeric(), nullable=True, comment="Declared unit value, ZAR (declaredvalue)"
        ),
        sa.Column(
            "actual_declared_value",
            sa.Numeric(),
            nullable=True,
            comment="Actual declared unit value, ZAR (actualdeclaredvalue)",
        ),
        sa.PrimaryKeyConstraint("order_id", "box_index", "line_index"),
        schema="core",
        comment="Declared goods per order, box and line.",
    )
    op.create_table(
        "fetch_errors",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema="ops",
        comment="Order details that could not be fetched, with the reason.",
    )
    op.create_table(
        "list_walks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("walked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("full_walk", sa.Boolean(), nullable=False, comment="Walked to the end of the list"),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("ids_seen", sa.Integer(), nullable=False),
        sa.Column("new_ids", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema="ops",
        comment="Each walk of the order list: full, or stopped at the first page of known ids.",
    )
    op.create_table(
        "transform_errors",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("payload_sha256", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "payload_sha256"),
        schema="ops",
        comment="Raw versions that could not be made sense of, with the reason.",
    )
    op.create_table(
        "order_ids",
        sa.Column("order_id", sa.Text(), nullable=False, comment="Buffalo order id, as text"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
        schema="raw",
        comment="Every order id the account's order list has shown.",
    )
    op.create_table(
        "order_versions",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="The order detail exactly as Buffalo sent it",
        ),
        sa.Column("payload_sha256", sa.Text(), nullable=False),
        sa.Column("first_fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True, comment="Dagster run that first stored it"),
        sa.PrimaryKeyConstraint("order_id", "payload_sha256"),
        schema="raw",
        comment="Append-only versions of each order's detail: a new row only when it changed.",
    )
    op.create_index(
        "order_versions_latest",
        "order_versions",
        ["order_id", sa.literal_column("last_fetched_at DESC")],
        unique=False,
        schema="raw",
    )
    op.execute(LATEST_ORDERS_VIEW)


def downgrade() -> None:
    # The schemas stay: `ops` holds the version table, and `analytics` may hold BI objects.
    op.execute("DROP VIEW raw.orders")
    op.drop_index("order_versions_latest", table_name="order_versions", schema="raw")
    for schema, table in (
        ("raw", "order_versions"),
        ("raw", "order_ids"),
        ("ops", "transform_errors"),
        ("ops", "list_walks"),
        ("ops", "fetch_errors"),
        ("core", "order_items"),
        ("core", "order_events"),
        ("core", "clean_orders"),
    ):
        op.drop_table(table, schema=schema)
