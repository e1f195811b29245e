"""Least privilege for BI: a read-only role that sees `analytics` and nothing else.

Power BI connects as this role. It may read every table and view in `analytics` (now and
later: default privileges), and has no access to `raw`, `core`, `ops` or Dagster's own
tables; delivery addresses never reach it except aggregated or masked.
"""

from __future__ import annotations

import sqlalchemy as sa

from buffalo_assets.storage.bulk import quote

PRIVATE_SCHEMAS = ("raw", "core", "ops", "public")


def grant_bi_role(engine: sa.Engine, role: str = "buffalo_bi", password: str | None = None) -> None:
    """Create (or update) `role` as a read-only reader of the `analytics` schema. Idempotent."""
    if not role.replace("_", "").isalnum():
        raise ValueError(f"not a plain role name: {role!r}")
    name = quote(role)
    with engine.begin() as connection:
        exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        login = "LOGIN" if password is not None else "NOLOGIN"
        options = f"{login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
        connection.execute(sa.text(f"{'ALTER' if exists else 'CREATE'} ROLE {name} {options}"))
        if password is not None:
            # Role passwords cannot be bound parameters; quote it as a literal instead.
            literal = connection.execute(sa.text("SELECT quote_literal(:p)"), {"p": password}).scalar_one()
            connection.execute(sa.text(f"ALTER ROLE {name} PASSWORD {literal}"))
        database = connection.execute(sa.text("SELECT current_database()")).scalar_one()
        connection.execute(sa.text(f"GRANT CONNECT ON DATABASE {quote(database)} TO {name}"))
        for schema in PRIVATE_SCHEMAS:
            connection.execute(sa.text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM {name}"))
            connection.execute(sa.text(f"REVOKE ALL ON SCHEMA {quote(schema)} FROM {name}"))
        connection.execute(sa.text(f"GRANT USAGE ON SCHEMA analytics TO {name}"))
        connection.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {name}"))
        connection.execute(
            sa.text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO {name}")
        )
