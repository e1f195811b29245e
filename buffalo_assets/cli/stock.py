"""`buffalo stock import`: Solo's own stock list, checked row by row, for the `stock_cover` asset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

MAX_PROBLEMS_SHOWN = 50


@click.group()
def stock() -> None:
    """Solo's own stock levels, for the `stock_cover` asset."""


@stock.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def stock_import(file: Path) -> None:
    """Load a stock CSV (goods,on_hand,daily_sales,as_of) into ops.stock_levels, replacing it all.

    Every row is checked first; with any bad value nothing is loaded, every problem is
    listed by line and column, and the stock list loaded before stays as it was. A good
    file replaces the whole list in one transaction (an item missing from the file is
    removed). `stock_cover` uses it from its next materialization.
    """
    from buffalo_assets.analytics.stock import StockFileError, parse_stock_levels, today_sast
    from buffalo_assets.storage.database import database_url
    from buffalo_assets.storage.resource import engine_for
    from buffalo_assets.storage.stock_store import count_stock_levels, replace_stock_levels

    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise click.ClickException(f"{file}: not UTF-8 text (byte {error.start}); nothing imported") from None
    engine = engine_for(database_url())
    before = count_stock_levels(engine)
    try:
        levels = parse_stock_levels(text, today_sast(), source=file.name)
    except StockFileError as error:
        shown = [f"  {problem}" for problem in error.problems[:MAX_PROBLEMS_SHOWN]]
        if len(error.problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"  ... and {len(error.problems) - MAX_PROBLEMS_SHOWN} more")
        raise click.ClickException(
            f"{file}: {len(error.problems)} problem(s), nothing imported "
            f"(ops.stock_levels keeps its {before} earlier rows):\n" + "\n".join(shown)
        ) from None
    imported_at = datetime.now(UTC)
    rows = [
        {str(k): v for k, v in row.items()} | {"imported_at": imported_at}
        for row in levels.to_dict("records")
    ]
    replaced = replace_stock_levels(engine, rows)  # never empty: parse refuses a file without rows
    click.echo(
        f"imported {len(rows)} stock levels from {file.name} into ops.stock_levels "
        f"(replacing {replaced} earlier rows); asset stock_cover uses them from its next run"
    )
