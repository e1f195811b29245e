"""`buffalo settings` and `buffalo check`: the settings in use, and whether they reach the account."""

from __future__ import annotations

import click

from buffalo_assets import settings


@click.command("settings")
@click.option("--markdown", is_flag=True, help="Print the settings table of docs/settings.md instead")
def show_settings(markdown: bool) -> None:
    """Print every setting with the value in use (secrets masked) and where it came from."""
    if markdown:
        click.echo(settings.markdown_table(), nl=False)
        return
    try:
        current = settings.load()
    except settings.SettingsConflict as conflict:
        raise click.ClickException(str(conflict)) from None
    explicit = current.model_fields_set
    old_name = {new: old for old, new in current.renamed_in_use.items()}
    width = max(len(settings.env_name(name)) for name in settings.Settings.model_fields)
    for name in settings.Settings.model_fields:
        variable = settings.env_name(name)
        value = getattr(current, name)
        shown = "unset" if value is None else ("********" if "Secret" in type(value).__name__ else str(value))
        source = "set" if name in explicit else "default"
        if variable in old_name:
            source += f"; old name {old_name[variable]} in use"
        click.echo(f"{variable:{width}} {shown:40} ({source})")
    found = "read" if current.env_file.exists() else "none found"
    click.echo(f"{'(.env file)':{width}} {current.env_file} ({found})")
    exposed = settings.env_file_warning(current.env_file)
    if exposed:
        click.echo(f"warning: {exposed}", err=True)
    for renamed in settings.renamed_warnings(current):
        click.echo(f"warning: {renamed}", err=True)


@click.command()
def check() -> None:
    """Check the settings and the Buffalo account: log in, list one page, fetch one order.

    Prints what it found (counts, one order's id and status; no personal data, never the
    password or the ticket) and stores nothing. Exits 1 with a one-line reason when a setting
    is missing or wrong, the login is refused or the API cannot be reached.
    """
    from buffalo_assets.buffalo.check import CheckFailed, load_settings, run_check

    def echo(label: str, what: str) -> None:
        click.echo(f"{label:10} {what}")

    try:
        run_check(echo, load_settings(), database=lambda current: _check_database(current.pg_url))
    except CheckFailed as failed:
        raise click.ClickException(str(failed)) from None


def _check_database(pg_url: str | None) -> str:
    """Whether BUFFALO_PG_URL answers (a `SELECT 1`, nothing written); the embedded server is not started."""
    if not pg_url:
        return "BUFFALO_PG_URL unset: the embedded PostgreSQL (`buffalo dev` and `buffalo db url` start it)"
    import sqlalchemy as sa

    from buffalo_assets.buffalo.check import CheckFailed
    from buffalo_assets.storage.database import normalize_url, ping, safe_url

    try:
        url = normalize_url(pg_url)
    except Exception as exc:  # noqa: BLE001 - any unparsable URL is a wrong setting
        raise CheckFailed(f"BUFFALO_PG_URL is not a database URL ({type(exc).__name__})") from None
    try:
        ping(url, timeout_s=5)
    except sa.exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
        raise CheckFailed(f"BUFFALO_PG_URL {safe_url(url)} does not answer: {reason}") from None
    return f"BUFFALO_PG_URL {safe_url(url)} answers"
