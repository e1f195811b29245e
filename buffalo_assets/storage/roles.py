"""Least privilege for BI: a read-only role that sees the `analytics.bi_*` views and nothing else.

Power BI connects as this role. It may read every view in `analytics` whose name starts
with `bi_` (migration 0002 and later create them, with documented, stable columns); it has
no access to the analytics base tables (they may change shape), nor to `raw`, `core`,
`ops` or Dagster's own tables, so delivery addresses never reach it. Views added by a later
migration become readable by running `buffalo db grant-bi` again (the command is idempotent).
"""

from __future__ import annotations

import sqlalchemy as sa

from buffalo_assets.storage.bulk import quote

PRIVATE_SCHEMAS = ("raw", "core", "ops", "public")
BI_VIEW_PREFIX = "bi_"


def bi_views(connection: sa.Connection) -> list[str]:
    """The views the BI role reads: `analytics.bi_*`, by name."""
    rows = connection.execute(
        sa.text(
            "SELECT viewname FROM pg_views WHERE schemaname = 'analytics' AND viewname LIKE :prefix "
            "ORDER BY viewname"
        ),
        {"prefix": BI_VIEW_PREFIX.replace("_", r"\_") + "%"},
    )
    return [row[0] for row in rows]


def grant_bi_role(
    engine: sa.Engine,
    role: str = "buffalo_bi",
    password: str | None = None,
    *,
    statement_timeout_s: float = 0,
    connection_limit: int = -1,
) -> list[str]:
    """Create (or update) `role` as a reader of the `analytics.bi_*` views only. Idempotent.

    Its queries are cancelled after `statement_timeout_s` (0: never) and it may hold at most
    `connection_limit` connections (-1: any number). Returns the views it may read.
    """
    if not role.replace("_", "").isalnum():
        raise ValueError(f"not a plain role name: {role!r}")
    if statement_timeout_s < 0 or connection_limit < -1:
        raise ValueError(
            f"BI role limits: statement timeout {statement_timeout_s} s must be >= 0, "
            f"connection limit {connection_limit} must be >= -1"
        )
    name = quote(role)
    with engine.begin() as connection:
        exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        login = "LOGIN" if password is not None else "NOLOGIN"
        options = (
            f"{login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT {int(connection_limit)}"
        )
        connection.execute(sa.text(f"{'ALTER' if exists else 'CREATE'} ROLE {name} {options}"))
        # Set on the role: every session of it starts with it (milliseconds; 0 turns it off).
        timeout_ms = round(statement_timeout_s * 1000)
        connection.execute(sa.text(f"ALTER ROLE {name} SET statement_timeout = {timeout_ms}"))
        if password is not None:
            # Role passwords cannot be bound parameters; quote it as a literal instead.
            literal = connection.execute(sa.text("SELECT quote_literal(:p)"), {"p": password}).scalar_one()
            connection.execute(sa.text(f"ALTER ROLE {name} PASSWORD {literal}"))
        database = connection.execute(sa.text("SELECT current_database()")).scalar_one()
        connection.execute(sa.text(f"GRANT CONNECT ON DATABASE {quote(database)} TO {name}"))
        for schema in (*PRIVATE_SCHEMAS, "analytics"):
            connection.execute(sa.text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM {name}"))
        for schema in PRIVATE_SCHEMAS:
            connection.execute(sa.text(f"REVOKE ALL ON SCHEMA {quote(schema)} FROM {name}"))
        # Earlier releases granted every future analytics table by default; base tables are
        # no longer for BI, so that default goes (a no-op where it was never given).
        connection.execute(
            sa.text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA analytics REVOKE SELECT ON TABLES FROM {name}")
        )
        connection.execute(sa.text(f"GRANT USAGE ON SCHEMA analytics TO {name}"))
        views = bi_views(connection)
        for view in views:
            connection.execute(sa.text(f"GRANT SELECT ON analytics.{quote(view)} TO {name}"))
    return views
