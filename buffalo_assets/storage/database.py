"""The one database: resolving `BUFFALO_PG_URL` (or starting the embedded server) and engines."""

from __future__ import annotations

from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from buffalo_assets import settings
from buffalo_assets.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError

PG_URL_VARIABLE = "BUFFALO_PG_URL"


class NoDatabaseError(RuntimeError):
    """No database configured and the embedded server is not running."""


NO_DATABASE = (
    f"{PG_URL_VARIABLE} is not set and the embedded PostgreSQL is not running: "
    "start the platform with `buffalo dev` (or `buffalo db url`), or set BUFFALO_PG_URL"
)


def embedded_server() -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.state_dir() / "postgres")


def database_url(*, start_embedded: bool = True) -> str:
    """`BUFFALO_PG_URL` if set, else the embedded server's URL (started if needed).

    With `start_embedded=False` nothing is started: the URL of an embedded server that
    already runs, else `NoDatabaseError` naming the command to run.
    """
    configured = settings.load().pg_url
    if configured:
        return normalize_url(configured)
    server = embedded_server()
    if start_embedded:
        try:
            return server.ensure_running()
        except OSError as error:  # its folder cannot be made or written: say which, and the way out
            raise EmbeddedPostgresError(
                f"cannot start the embedded PostgreSQL in {server.data_dir}: {error.strerror or error}; "
                f"set BUFFALO_HOME to a writable folder, or {PG_URL_VARIABLE} to use another server"
            ) from error
    if server.is_running():
        return server.url()
    raise NoDatabaseError(NO_DATABASE)


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` too, always using the psycopg2 driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"{PG_URL_VARIABLE} must be a PostgreSQL URL, got {safe_url(url)}")
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, for printing and logs (query values unescaped)."""
    return unquote(make_url(url).render_as_string(hide_password=True))


APPLICATION_NAME = "buffalo_assets"


def create_engine(url: str | None = None) -> Engine:
    """An engine whose connections show up as `buffalo_assets` in pg_stat_activity."""
    return sa.create_engine(
        url or database_url(),
        pool_pre_ping=True,
        connect_args={"application_name": APPLICATION_NAME},
    )


def _on_server(server_url: str, name: str, *statements: str) -> None:
    """Run database-level statements (`{name}` filled in) on the server of `server_url`."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for statement in statements:
                connection.execute(sa.text(statement.format(name=name)))
    finally:
        admin.dispose()


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` (if present, disconnecting its sessions) on the server of `server_url`."""
    _on_server(server_url, name, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recreate_database(server_url: str, name: str) -> str:
    """Drop (if present) and create database `name` on the server of `server_url`; its URL."""
    _on_server(server_url, name, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', 'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def ping(url: str, *, timeout_s: int = 5) -> None:
    """Whether the server of `url` answers: connect (waiting at most `timeout_s`) and `SELECT 1`.

    Writes nothing, starts nothing (not the embedded server) and creates no schema; raises
    SQLAlchemy's error when the server does not answer or refuses the connection.
    """
    engine = sa.create_engine(url, connect_args={"connect_timeout": timeout_s})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()
