"""Declared tables of the platform. Nothing is ever created from a DataFrame's guessed types.

Schemas: `raw` (what Buffalo said, never edited), `core` (typed, cleaned), `analytics`
(what BI reads), `ops` (run bookkeeping and quarantine).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

SCHEMAS = ("raw", "core", "analytics", "ops")

metadata = sa.MetaData()

order_ids = sa.Table(
    "order_ids",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True, comment="Buffalo order id, as text"),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    schema="raw",
    comment="Every order id the account's order list has shown.",
)

order_versions = sa.Table(
    "order_versions",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("payload", JSONB, nullable=False, comment="The order detail exactly as Buffalo sent it"),
    sa.Column("payload_sha256", sa.Text, primary_key=True),
    sa.Column("first_fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.Text, nullable=True, comment="Dagster run that first stored it"),
    schema="raw",
    comment="Append-only versions of each order's detail: a new row only when it changed.",
)
sa.Index("order_versions_latest", order_versions.c.order_id, order_versions.c.last_fetched_at.desc())

fetch_errors = sa.Table(
    "fetch_errors",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema="ops",
    comment="Order details that could not be fetched, with the reason.",
)

list_walks = sa.Table(
    "list_walks",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("walked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("full_walk", sa.Boolean, nullable=False, comment="Walked to the end of the list"),
    sa.Column("pages", sa.Integer, nullable=False),
    sa.Column("ids_seen", sa.Integer, nullable=False),
    sa.Column("new_ids", sa.Integer, nullable=False),
    schema="ops",
    comment="Each walk of the order list: full, or stopped at the first page of known ids.",
)

LATEST_ORDERS_VIEW = """
CREATE OR REPLACE VIEW raw.orders AS
SELECT DISTINCT ON (order_id)
       order_id, payload, payload_sha256, first_fetched_at, last_fetched_at, run_id
FROM raw.order_versions
ORDER BY order_id, last_fetched_at DESC, first_fetched_at DESC
"""


def ensure_schema(engine: Engine) -> None:
    """Create schemas, tables and views if they are missing. Safe to run concurrently and often."""
    with engine.begin() as connection:
        # Two processes creating the same objects at once would race; serialise on a lock.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('buffalo_schema'))"))
        for schema in SCHEMAS:
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        metadata.create_all(connection, checkfirst=True)
        connection.execute(sa.text(LATEST_ORDERS_VIEW))
