"""`buffalo report`: the latest delivery report (asset `delivery_report`), written to a file or served."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from buffalo_assets import settings
from buffalo_assets.cli._common import demo_database_url

if TYPE_CHECKING:
    import sqlalchemy as sa

NO_REPORT = "no delivery report yet: materialize the asset delivery_report first"


def default_report_path() -> Path:
    """Where a report is written unless told otherwise: `.buffalo/reports/delivery-report.html`."""
    return settings.state_dir() / "reports" / "delivery-report.html"


def latest_report(engine: sa.Engine) -> str | None:
    """The newest stored delivery report's HTML; None when none was rendered yet."""
    from buffalo_assets.storage.summaries import latest_delivery_report

    with engine.connect() as connection:
        return latest_delivery_report(connection)


def write_latest_report(engine: sa.Engine, path: Path) -> Path | None:
    """Write the newest stored delivery report to `path`; None when none was rendered yet."""
    html = latest_report(engine)
    if html is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


@click.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write the report to (default: .buffalo/reports/delivery-report.html)",
)
@click.option("--serve", is_flag=True, help="Serve the latest report over HTTP instead, until Ctrl-C")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to serve on")
@click.option("--port", default=8766, show_default=True)
@click.option("--demo", "use_demo", is_flag=True, help="The report of the last `buffalo demo`")
def report(output: Path | None, serve: bool, host: str, port: int, use_demo: bool) -> None:
    """The latest delivery report (asset `delivery_report`): written to a file, or served."""
    from buffalo_assets.storage.database import database_url
    from buffalo_assets.storage.resource import engine_for

    engine = engine_for(demo_database_url(fresh=False) if use_demo else database_url())
    if not serve:
        path = output or default_report_path()
        if write_latest_report(engine, path) is None:
            raise click.ClickException(NO_REPORT)
        click.echo(str(path))
        return
    if latest_report(engine) is None:
        raise click.ClickException(NO_REPORT)
    serve_report(engine, host, port)


def serve_report(engine: sa.Engine, host: str, port: int) -> None:
    """Serve the latest report at / on `host`:`port` (0: a free port) until Ctrl-C.

    The report is read on every request, so a reload shows the report of the latest run.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            if self.path not in ("/", "/index.html"):
                self.send_error(404, "the report is at /")
                return
            body = (latest_report(engine) or "").encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

    with ThreadingHTTPServer((host, port), Handler) as server:
        click.echo(
            f"serving the latest delivery report on http://{host}:{server.server_port}/ (Ctrl-C stops)"
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
