"""`buffalo db`: the database's URL, its schema migrations, the read-only BI role, the server's TLS
certificate, the embedded server."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from buffalo_assets import settings


@click.group()
def db() -> None:
    """The PostgreSQL database (BUFFALO_PG_URL, or the embedded server)."""


@db.command("url")
def db_url() -> None:
    """Print the database URL in use, starting the embedded server if needed."""
    from buffalo_assets.storage.database import database_url

    click.echo(database_url())


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the raw, core, analytics and ops schemas to the newest migration (or create them)."""
    from buffalo_assets.storage.database import create_engine, database_url
    from buffalo_assets.storage.migrations import SchemaVersionError, upgrade

    engine = create_engine(database_url())
    try:
        click.echo(upgrade(engine).describe())
    except SchemaVersionError as error:
        raise click.ClickException(str(error)) from error
    finally:
        engine.dispose()


@db.command("init")
@click.pass_context
def db_init(ctx: click.Context) -> None:
    """The same as `buffalo db upgrade` (its name before schema migrations)."""
    click.echo("`buffalo db init` is the same as `buffalo db upgrade`")
    ctx.invoke(db_upgrade)


@db.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes, e.g. 'add orders.vat'")
def db_revision(message: str) -> None:
    """Write a migration for the changes in storage/tables.py (Alembic autogenerate).

    Compares tables.py with a scratch database upgraded to the current head (created on the
    server of BUFFALO_PG_URL or the embedded one, dropped after), so no real database is read.
    Review the file it writes, then commit it with the change to tables.py.
    """
    import importlib.util
    import uuid

    from alembic import command

    from buffalo_assets.storage.database import create_engine, database_url, drop_database, recreate_database
    from buffalo_assets.storage.migrations import (
        alembic_config,
        next_revision_id,
        schema_differences,
        upgrade,
    )

    server_url = database_url()
    scratch = f"buffalo_revision_{uuid.uuid4().hex[:8]}"
    engine = create_engine(recreate_database(server_url, scratch))
    try:
        upgrade(engine)
        with engine.begin() as connection:
            if not schema_differences(connection):
                click.echo("storage/tables.py matches the migration head: no migration written")
                return
            config = alembic_config(connection)
            if importlib.util.find_spec("ruff") is not None:  # a dev dependency: format when present
                config.set_section_option("post_write_hooks", "hooks", "format, fix")
                for hook, options in (("format", "format"), ("fix", "check --fix --quiet")):
                    config.set_section_option("post_write_hooks", f"{hook}.type", "exec")
                    config.set_section_option("post_write_hooks", f"{hook}.executable", sys.executable)
                    config.set_section_option(
                        "post_write_hooks", f"{hook}.options", f"-m ruff {options} REVISION_SCRIPT_FILENAME"
                    )
            script = command.revision(config, message=message, autogenerate=True, rev_id=next_revision_id())
    finally:
        engine.dispose()
        drop_database(server_url, scratch)
    scripts = script if isinstance(script, list) else [script]
    for written in scripts:
        if written is not None:
            click.echo(f"wrote {written.path}: review it, then commit it with the change to tables.py")


@db.command("grant-bi")
@click.option("--role", default="buffalo_bi", show_default=True, help="Name of the read-only role")
def db_grant_bi(role: str) -> None:
    """Create the read-only BI role: reads the analytics.bi_* views, nothing else.

    Its password is BUFFALO_BI_PASSWORD; run it again after an upgrade that adds views.
    """
    from buffalo_assets.storage.database import create_engine, database_url, safe_url
    from buffalo_assets.storage.migrations import upgrade
    from buffalo_assets.storage.roles import grant_bi_role

    url = database_url()
    engine = create_engine(url)
    upgrade(engine)
    current = settings.load()
    secret = current.bi_password
    password = secret.get_secret_value() if secret else None
    views = grant_bi_role(
        engine,
        role,
        password,
        statement_timeout_s=current.bi_statement_timeout_s,
        connection_limit=current.bi_connection_limit,
    )
    engine.dispose()
    login = "can log in" if password else "no login (set BUFFALO_BI_PASSWORD to allow one)"
    timeout = f"{current.bi_statement_timeout_s:g} s" if current.bi_statement_timeout_s else "none"
    limit = current.bi_connection_limit if current.bi_connection_limit >= 0 else "none"
    click.echo(
        f"role {role} reads the {len(views)} views analytics.bi_* only in {safe_url(url)}; {login}\n"
        f"limits: statement timeout {timeout} (BUFFALO_BI_STATEMENT_TIMEOUT_S), "
        f"connections {limit} (BUFFALO_BI_CONNECTION_LIMIT)\n"
        f"views: {', '.join(views) or '(none: run `buffalo db upgrade`)'}"
    )


@db.command("make-cert")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A name or IP address clients connect to (repeat for more); the certificate's SANs",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("deploy/certs"),
    show_default=True,
    help="Folder for ca.crt, ca.key, server.crt, server.key (what the compose postgres service mounts)",
)
@click.option(
    "--days", type=int, default=825, show_default=True, help="Validity of the server certificate, days"
)
@click.option("--new-ca", is_flag=True, help="Make a new CA even if the folder has one (trust it anew)")
def db_make_cert(hosts: tuple[str, ...], out: Path, days: int, new_ca: bool) -> None:
    """Make the PostgreSQL server's TLS certificate, signed by a private CA, for Power BI.

    Reuses the CA in --out when it covers the names, so clients that trust its ca.crt keep
    trusting the server; keys are written readable by their owner only (0600).
    """
    from buffalo_assets.storage.tls import CertificateError, make_server_certificate

    try:
        issued = make_server_certificate(out, hosts, days=days, new_ca=new_ca)
    except CertificateError as error:
        raise click.ClickException(str(error)) from error
    ca = "reused the CA" if issued.ca_reused else "made a new CA"
    click.echo(
        f"{ca} and a server certificate for {', '.join(issued.hosts)} in {out}, valid until "
        f"{issued.not_after:%Y-%m-%d}:\n"
        + "".join(f"  {path}\n" for path in issued.files)
        + f"CA thumbprint (SHA-1, as Windows shows it): {issued.ca_sha1}\n"
        f"CA fingerprint (SHA-256): {issued.ca_sha256}\n"
        "Next: restart PostgreSQL (docker compose restart postgres), then trust ca.crt on the analysts' "
        'machines and the gateway: docs/deploy.md, section "PostgreSQL for Power BI"'
    )


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server, if it runs."""
    from buffalo_assets.storage.database import embedded_server

    server = embedded_server()
    stopped = server.stop()
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
    for change in server.root_changes() if stopped else []:
        # Undoing them could break another checkout's server; say what stays instead.
        click.echo(f"left in place (made when set up as root): {change}")
