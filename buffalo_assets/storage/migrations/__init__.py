"""Schema migrations: Alembic owns the `raw`, `core`, `analytics` and `ops` schemas.

`upgrade(engine)` brings a database to the newest revision (the migration *head*) and runs
at the start of every process that writes (`engine_for`, `buffalo db upgrade`). It costs
one query when the database is already at head, and serialises real upgrades on a
PostgreSQL advisory lock, because several runs, the daemon and the UI may start at once.

A database made by release 0.1 (tables created by its `ensure_schema`, no version table)
is recognised and stamped at the baseline revision 0001, whose objects are exactly that
release's, then upgraded like any other. The version table is `ops.alembic_version`:
Dagster keeps its own `alembic_version` in `public` of the same database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from buffalo_assets.storage.database import safe_url
from buffalo_assets.storage.tables import SCHEMAS, metadata

if TYPE_CHECKING:  # Alembic is imported when a migration is looked at, not with the definitions.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"
VERSION_SCHEMA = "ops"
BASELINE = "0001"
# The key release 0.1's ensure_schema locked on, so an old and a new process never race.
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('buffalo_schema'))"
# What release 0.1 created (frozen: tables.py moves on, the old release does not).
RELEASE_0_1_TABLES = (
    "raw.order_ids",
    "raw.order_versions",
    "ops.fetch_errors",
    "ops.list_walks",
    "core.clean_orders",
    "core.order_items",
    "core.order_events",
    "ops.transform_errors",
)


class SchemaVersionError(RuntimeError):
    """The database's schema cannot be brought to this code's migration head."""


@dataclass(frozen=True)
class UpgradeResult:
    """What `upgrade` found and did."""

    url: str
    before: str | None
    after: str
    stamped_baseline: bool = False

    @property
    def changed(self) -> bool:
        return self.stamped_baseline or self.before != self.after

    def describe(self) -> str:
        where = safe_url(self.url)
        if not self.changed:
            return f"schema of {where} is at head {self.after}; nothing to do"
        steps = []
        if self.stamped_baseline:
            steps.append(
                f"found the tables of release 0.1 without a version table: stamped baseline {BASELINE}"
            )
        start = BASELINE if self.stamped_baseline else self.before
        if start is None:
            steps.append(f"upgraded an empty database to {self.after}")
        elif start != self.after:
            steps.append(f"upgraded {start} -> {self.after}")
        return f"schema of {where}: " + "; ".join(steps)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini, no dependence on the cwd)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    # Sequential ids (0002_add_x.py) read better in review than random hex; `%%` escapes
    # ConfigParser interpolation.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


_script: ScriptDirectory | None = None
_script_lock = threading.Lock()


def script_directory() -> ScriptDirectory:
    """The migration scripts, loaded once per process."""
    global _script
    with _script_lock:
        if _script is None:
            from alembic.script import ScriptDirectory

            _script = ScriptDirectory.from_config(alembic_config())
        return _script


def head_revision() -> str:
    """The newest revision: the schema this code expects."""
    head = script_directory().get_current_head()
    if head is None:
        raise SchemaVersionError(f"no migration scripts in {MIGRATIONS_DIR / 'versions'}")
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in script_directory().walk_revisions()}


def next_revision_id() -> str:
    """The id for a new migration: one more than the highest numeric id, 4 digits."""
    numbers = [int(r) for r in known_revisions() if r.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def _include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    # Only the platform's schemas: Dagster's tables (and its own alembic_version) live in public.
    if type_ == "schema":
        return name in SCHEMAS
    return True


def context_options(
    include_object: Callable[[Any, str | None, str, bool, Any], bool] | None = None,
) -> dict[str, Any]:
    """Options of every migration context: env.py's, the drift check's and the tests'."""
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "version_table_schema": VERSION_SCHEMA,
        "include_schemas": True,
        "include_name": _include_name,
        "compare_type": True,
        "compare_server_default": True,
    }
    if include_object is not None:
        options["include_object"] = include_object
    return options


def current_revision(connection: Connection) -> str | None:
    """The database's revision, or None when it has no version table (or an empty one)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "version_table_schema": VERSION_SCHEMA}
    )
    return context.get_current_revision()


def _revision_fast(engine: Engine) -> str | None:
    """The revision in one query; None when there is no version table yet."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_SCHEMA}.{VERSION_TABLE}"))
            revisions = list(rows.scalars())
    except sa.exc.ProgrammingError:
        return None
    return revisions[0] if len(revisions) == 1 else None


def _release_0_1_tables(connection: Connection) -> list[str]:
    found = connection.execute(
        sa.text("SELECT t FROM unnest(CAST(:names AS text[])) AS t WHERE to_regclass(t) IS NOT NULL"),
        {"names": list(RELEASE_0_1_TABLES)},
    )
    return list(found.scalars())


def upgrade(engine: Engine) -> UpgradeResult:
    """Bring the database to the migration head. Cheap when it is there; safe to run concurrently.

    Raises SchemaVersionError when the database is at a revision this code does not know
    (a newer release upgraded it) or holds only part of release 0.1's tables.
    """
    from alembic import command

    url = engine.url.render_as_string(hide_password=False)
    head = head_revision()
    if _revision_fast(engine) == head:
        return UpgradeResult(url, head, head)
    with engine.begin() as connection:
        connection.execute(sa.text(LOCK_SQL))
        # Another process may have upgraded while this one waited for the lock.
        before = current_revision(connection)
        if before == head:
            return UpgradeResult(url, head, head)
        if before is not None and before not in known_revisions():
            raise SchemaVersionError(
                f"database {safe_url(url)} is at schema revision {before!r}, which this code does not "
                f"know (its newest is {head!r}): a newer release of buffalo_assets upgraded it. Run "
                "that release, or deploy this one against a database it created."
            )
        stamped = False
        config = alembic_config(connection)
        if before is None:
            # Alembic writes its version table before running any migration.
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{VERSION_SCHEMA}"'))
            present = _release_0_1_tables(connection)
            if present and len(present) < len(RELEASE_0_1_TABLES):
                missing = sorted(set(RELEASE_0_1_TABLES) - set(present))
                raise SchemaVersionError(
                    f"database {safe_url(url)} has no schema version but holds some of release 0.1's "
                    f"tables ({', '.join(sorted(present))}) and lacks {', '.join(missing)}: it was not "
                    "made by release 0.1 and cannot be stamped; compare it with "
                    "buffalo_assets/storage/migrations/versions and fix it by hand"
                )
            if present:
                # Release 0.1 created exactly revision 0001's objects (tests/test_migrations.py
                # proves it); creating them again would fail, so record that they exist.
                command.stamp(config, BASELINE)
                stamped = True
        command.upgrade(config, "head")
        result = UpgradeResult(url, before, head, stamped)
    log.info("%s", result.describe())
    return result


def describe_difference(difference: Any, dialect: sa.Dialect) -> str:
    """One autogenerate difference in words: what is declared, what the database has."""

    def shown(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, sa.types.TypeEngine):
            return value.compile(dialect=dialect).lower()
        if isinstance(value, sa.schema.DefaultClause):
            value = value.arg
        if isinstance(value, sa.sql.ClauseElement):
            return str(value.compile(dialect=dialect))
        return repr(value) if isinstance(value, str) else str(value)

    if isinstance(difference, list):  # modify_* differences come wrapped in a list
        return "; ".join(describe_difference(d, dialect) for d in difference)
    kind = difference[0]
    if kind in ("add_table", "remove_table"):
        table = difference[1]
        where = "declared, missing from the database" if kind == "add_table" else "not declared"
        return f"table {table.schema}.{table.name}: {where}"
    if kind in ("add_column", "remove_column"):
        _, schema, table, column = difference
        if kind == "add_column":
            return f"{schema}.{table}.{column.name}: declared {shown(column.type)}, found absent"
        return f"{schema}.{table}.{column.name}: declared absent, found {shown(column.type)}"
    if kind.startswith("modify_"):
        _, schema, table, column, _existing, found, declared = difference
        what = kind.removeprefix("modify_")
        return f"{schema}.{table}.{column}: {what} declared {shown(declared)}, found {shown(found)}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        item = difference[1]
        table = item.table
        where = "declared, missing from the database" if kind.startswith("add") else "not declared"
        return f"{kind.split('_', 1)[1]} {item.name} on {table.schema}.{table.name}: {where}"
    if kind in ("add_table_comment", "remove_table_comment"):
        table = difference[1]
        return f"table {table.schema}.{table.name}: comment differs from the declared one"
    return repr(difference)


def schema_differences(connection: Connection, tables: Iterable[sa.Table] | None = None) -> list[Any]:
    """Alembic's autogenerate differences between the database and tables.py (all, or `tables`)."""
    wanted = None if tables is None else {(t.schema, t.name) for t in tables}

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if wanted is not None and type_ == "table":  # reflect only the wanted tables: cheaper
            return (parent_names.get("schema_name"), name) in wanted
        return _include_name(name, type_, parent_names)

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if wanted is None or type_ != "table":
            return True
        return (obj.schema, obj.name) in wanted

    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    options = context_options(include_object) | {"include_name": include_name}
    context = MigrationContext.configure(connection, opts=options)
    return list(compare_metadata(context, metadata))


def table_drift(connection: Connection, table: sa.Table) -> list[str]:
    """Why `table` in the database is not the migration head's, in words; empty when it is."""
    problems = []
    head, current = head_revision(), current_revision(connection)
    if current != head:
        problems.append(f"database at schema revision {current or 'none'}, migration head is {head}")
    problems += [describe_difference(d, connection.dialect) for d in schema_differences(connection, [table])]
    return problems
