"""The Postgres IO manager: how assets hand pandas tables to each other.

An asset's table is named by its `dagster/table_name` definition metadata (for example
`raw.order_ids`) and must be declared in `storage/tables.py`; nothing is created from a
DataFrame's guessed types. `write_mode` metadata picks replace, append or upsert
(`primary_key`, and optionally `update_columns`, also from metadata).

An asset may return a `FrameChunks` instead of one DataFrame: the chunks are written as
they come, so memory does not grow with the number of rows. Every chunk is COPYed into a
temporary table and merged with one INSERT, in one transaction per chunk (replace: one
transaction for all of them, so readers never see a half-replaced table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field

from buffalo_assets.storage.bulk import FrameWrite, in_transaction, qualified_name, quote, write_frame
from buffalo_assets.storage.resource import engine_for
from buffalo_assets.storage.tables import metadata as declared

WRITE_MODES = ("replace", "append", "upsert")


@dataclass
class WriteTotals:
    chunks: int = 0
    rows: int = 0
    inserted: int = 0
    updated: int = 0

    def add(self, written: FrameWrite) -> None:
        if written.rows:
            self.chunks += 1
        self.rows += written.rows
        self.inserted += written.inserted
        self.updated += written.updated


@dataclass
class FrameChunks:
    """An asset output written chunk by chunk; `summarize` adds metadata once all are written.

    `summarize` may raise (for example dagster.Failure): the chunks already written stay.
    """

    frames: Iterable[pd.DataFrame]
    summarize: Callable[[WriteTotals], Mapping[str, Any]] | None = field(default=None)


def declared_table(name: str) -> sa.Table:
    table = declared.tables.get(name)
    if table is None:
        raise ValueError(f"table {name!r} is not declared in buffalo_assets/storage/tables.py")
    return table


def column_schema(table: sa.Table) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                name=column.name,
                type=str(column.type).lower(),
                description=column.comment,
            )
            for column in table.columns
        ]
    )


class PostgresIOManager(ConfigurableIOManager):
    """Stores pandas DataFrames (or FrameChunks) in declared PostgreSQL tables."""

    url: str | None = Field(
        default=None,
        description="Database URL (unset: BUFFALO_PG_URL, else the running embedded server)",
    )

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | FrameChunks | None) -> None:
        if obj is None:
            return
        spec = _WriteSpec.from_metadata(context.definition_metadata, context)
        chunks = obj if isinstance(obj, FrameChunks) else FrameChunks([obj])
        engine = engine_for(self.url)
        totals = WriteTotals()
        if spec.mode == "replace":
            with engine.begin() as connection:
                connection.execute(sa.text(f"DELETE FROM {spec.qualified}"))
                for frame in chunks.frames:
                    totals.add(write_frame(connection, spec.table, frame, "append"))
        else:
            for frame in chunks.frames:
                totals.add(
                    in_transaction(
                        engine,
                        lambda connection, frame=frame: write_frame(
                            connection, spec.table, frame, spec.mode, spec.primary_key, spec.update_columns
                        ),
                    )
                )
        with engine.connect() as connection:
            row_count = connection.execute(sa.text(f"SELECT count(*) FROM {spec.qualified}")).scalar_one()
        metadata: dict[str, Any] = {
            "dagster/table_name": spec.name,
            "dagster/row_count": MetadataValue.int(int(row_count)),
            "dagster/column_schema": column_schema(spec.table),
            "write_mode": spec.mode,
            "rows_written": MetadataValue.int(totals.rows),
            "chunks": MetadataValue.int(totals.chunks),
        }
        if spec.mode == "upsert":
            metadata["rows_inserted"] = MetadataValue.int(totals.inserted)
            metadata["rows_updated"] = MetadataValue.int(totals.updated)
        context.add_output_metadata(metadata)
        if chunks.summarize is not None:
            context.add_output_metadata(dict(chunks.summarize(totals)))

    def load_input(self, context: InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        source = upstream.definition_metadata if upstream is not None else {}
        spec = _WriteSpec.from_metadata(source, context)
        columns = ", ".join(quote(c.name) for c in spec.table.columns)
        with engine_for(self.url).connect() as connection:
            return pd.read_sql_query(sa.text(f"SELECT {columns} FROM {spec.qualified}"), connection)


@dataclass(frozen=True)
class _WriteSpec:
    name: str
    table: sa.Table
    mode: str
    primary_key: tuple[str, ...]
    update_columns: tuple[str, ...] | None

    @property
    def qualified(self) -> str:
        return qualified_name(self.table)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], context: OutputContext | InputContext) -> _WriteSpec:
        what = context.asset_key.to_user_string() if context.has_asset_key else "this output"
        name = _plain(metadata.get("dagster/table_name"))
        if not name:
            raise ValueError(f"{what} has no 'dagster/table_name' metadata naming its table")
        table = declared_table(name)
        mode = _plain(metadata.get("write_mode")) or "replace"
        if mode not in WRITE_MODES:
            raise ValueError(f"{what}: write_mode must be one of {', '.join(WRITE_MODES)}, not {mode!r}")
        primary_key = tuple(_plain(metadata.get("primary_key")) or (c.name for c in table.primary_key))
        update = _plain(metadata.get("update_columns"))
        if mode == "upsert" and not primary_key:
            raise ValueError(f"{what}: upsert needs a primary key")
        return cls(name, table, mode, primary_key, tuple(update) if update is not None else None)


def _plain(value: Any) -> Any:
    """Definition metadata arrives as MetadataValue objects in some contexts; unwrap them."""
    return getattr(value, "value", value)
