"""Alembic's entry script: runs the migrations on the connection `upgrade()` hands over.

Run through `buffalo_assets.storage.migrations` (or `buffalo db upgrade`), never through an
alembic.ini: the configuration is built in code so that it does not depend on the current
directory.
"""

from __future__ import annotations

from alembic import context

from buffalo_assets.storage.migrations import context_options

config = context.config
connection = config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError(
        "run migrations through buffalo_assets.storage.migrations (`buffalo db upgrade`), "
        "which hands Alembic an open connection; offline SQL generation is not supported"
    )
context.configure(connection=connection, **context_options())
with context.begin_transaction():
    context.run_migrations()
