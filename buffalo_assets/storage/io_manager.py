"""The Postgres IO manager: the one place that writes asset outputs, and how assets read them.

An asset's table is named by its `dagster/table_name` definition metadata (for example
`raw.order_ids`) and must be declared in `storage/tables.py`; nothing is created from a
DataFrame's guessed types. What an asset returns decides how it is written:

- a DataFrame, or `FrameChunks` (an iterable of DataFrames, so memory does not grow with
  the number of rows), or `CsvChunks` (chunks already serialised by `bulk.as_csv`, so that
  an asset can do that work while it waits on something else): `write_mode` metadata picks
  replace, append or upsert
  (`primary_key`, and optionally `update_columns`, also from metadata). Every chunk is
  COPYed into a temporary table and merged with one INSERT, in one transaction per chunk
  (replace: one transaction for all of them, so readers never see a half-replaced table).
- `TableBatches`: batches that each replace some keys' rows in several declared tables
  at once (for a multi-asset whose tables must change together), one transaction per batch.
- `WrittenWith`: nothing to write, another output of the same step wrote this table; the
  table is still reported (row count, schema, preview).

Every output reports its table name, row count, column schema and write seconds.
`load_input` reads a declared table as one DataFrame, or as `FrameChunks` streamed from a
server-side cursor (input metadata `chunk_rows`, or an input annotated `FrameChunks`),
optionally only some columns (input metadata `columns`).
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dagster import (
    ConfigurableIOManager,
    DagsterType,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
    TypeCheck,
    TypeCheckContext,
    make_python_type_usable_as_dagster_type,
)
from pydantic import Field

from buffalo_assets.storage.bulk import (
    CsvFrame,
    FrameWrite,
    in_transaction,
    qualified_name,
    quote,
    replace_keys,
    write_frame,
)
from buffalo_assets.storage.resource import engine_for
from buffalo_assets.storage.tables import metadata as declared

if TYPE_CHECKING:
    import pandas as pd
    from pandas import DataFrame
else:
    from buffalo_assets.lazy import pd

    class DataFrame:
        """What an asset's signature names for a pandas DataFrame input (`clean_orders:
        DataFrame`): to type checkers it is pandas.DataFrame; to Dagster, which reads the
        signatures when the definitions load, a type checked with pandas only when a step
        runs, so that loading the definitions does not import pandas (buffalo_assets/lazy.py)."""

    def _is_data_frame(_context: TypeCheckContext, value: object) -> TypeCheck:
        if isinstance(value, pd.DataFrame):
            return TypeCheck(success=True)
        return TypeCheck(
            success=False, description=f"expected a pandas DataFrame, got {type(value).__name__}"
        )

    make_python_type_usable_as_dagster_type(
        DataFrame, DagsterType(_is_data_frame, name="DataFrame", typing_type=DataFrame)
    )

WRITE_MODES = ("replace", "append", "upsert")
DEFAULT_CHUNK_ROWS = 50_000


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
    """A table as DataFrame chunks: an asset output written chunk by chunk, or an input read so."""

    frames: Iterable[pd.DataFrame]

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter(self.frames)


@dataclass
class CsvChunks:
    """A table as chunks already serialised for COPY (`bulk.as_csv`): written like FrameChunks."""

    chunks: Iterable[CsvFrame]


class FrameSpill:
    """CsvFrames (or lists of row tuples) appended to an anonymous temporary file, read back
    one at a time as CsvChunks (or the lists).

    Lets an asset do its slow work in its own body (logged and timed there) and hand the
    IO manager the result at the end without holding it all in memory. The file vanishes
    when closed, or with the process.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._file = tempfile.TemporaryFile(prefix="buffalo-spill-", dir=directory)  # noqa: SIM115 - closed by close()
        self.chunks = 0
        self.rows = 0

    def append(self, frame: CsvFrame | Sequence[tuple[Any, ...]]) -> None:
        rows = frame.rows if isinstance(frame, CsvFrame) else len(frame)
        if not rows:
            return
        pickle.dump(frame, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self.chunks += 1
        self.rows += rows

    def read_back_csv(self) -> CsvChunks:
        """The CsvFrames appended."""
        return CsvChunks(self._frames())

    def read_back_rows(self) -> Iterator[Any]:
        """The lists of rows appended."""
        return self._frames()

    def _frames(self) -> Iterator[Any]:
        self._file.flush()
        self._file.seek(0)
        for _ in range(self.chunks):
            yield pickle.load(self._file)  # noqa: S301 - our own file, written just before

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FrameSpill:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class TableRows:
    """One table's rows of a TableBatch, spilled to a CSV file by `bulk.spill_rows`."""

    table: str
    path: Path | None
    rows: int


@dataclass(frozen=True)
class TableBatch:
    """The rows of some keys in several tables: in one transaction, each table's rows whose
    `key_column` is in `keys` are deleted, then the batch's rows inserted."""

    key_column: str
    keys: Sequence[str]
    tables: Sequence[TableRows]


@dataclass
class TableBatches:
    """An output that writes several declared tables together, batch by batch."""

    batches: Iterable[TableBatch]


@dataclass(frozen=True)
class WrittenWith:
    """An output whose table another output of the same step wrote (in its TableBatches)."""

    output: str


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


Writable = DataFrame | FrameChunks | CsvChunks | TableBatches | WrittenWith | None


class PostgresIOManager(ConfigurableIOManager):
    """Stores asset outputs in declared PostgreSQL tables and loads them for downstream assets."""

    url: str | None = Field(
        default=None,
        description="Database URL (unset: BUFFALO_PG_URL, else the running embedded server)",
    )

    def handle_output(self, context: OutputContext, obj: Writable) -> None:
        if obj is None:
            return
        spec = _WriteSpec.from_metadata(context.definition_metadata, context)
        engine = engine_for(self.url)
        started = time.perf_counter()
        if isinstance(obj, TableBatches):
            metadata = _write_batches(engine, spec, obj)
        elif isinstance(obj, WrittenWith):
            metadata = {"written_with": obj.output}
        elif isinstance(obj, CsvChunks):
            metadata = _write_frames(engine, spec, obj.chunks)
        else:
            chunks = obj if isinstance(obj, FrameChunks) else FrameChunks([obj])
            metadata = _write_frames(engine, spec, chunks)
        write_s = time.perf_counter() - started
        with engine.connect() as connection:
            row_count = connection.execute(sa.text(f"SELECT count(*) FROM {spec.qualified}")).scalar_one()
            preview = _preview(connection, spec) if spec.preview_rows else None
        context.add_output_metadata(
            {
                "dagster/table_name": spec.name,
                "dagster/row_count": MetadataValue.int(int(row_count)),
                "dagster/column_schema": column_schema(spec.table),
                **metadata,
                "write_s": MetadataValue.float(round(write_s, 3)),
                **({"preview": MetadataValue.md(preview)} if preview is not None else {}),
            }
        )

    def load_input(self, context: InputContext) -> pd.DataFrame | FrameChunks:
        upstream = context.upstream_output
        source = upstream.definition_metadata if upstream is not None else {}
        spec = _WriteSpec.from_metadata(source, context)
        wanted = _plain(context.definition_metadata.get("columns"))
        columns = list(wanted) if wanted else [c.name for c in spec.table.columns]
        unknown = [c for c in columns if c not in spec.table.c]
        if unknown:
            raise ValueError(
                f"input {context.name!r} asks for columns {unknown} that {spec.name} does not have"
            )
        query = f"SELECT {', '.join(quote(c) for c in columns)} FROM {spec.qualified}"
        chunk_rows = _plain(context.definition_metadata.get("chunk_rows"))
        if chunk_rows is None and getattr(context.dagster_type, "typing_type", None) is FrameChunks:
            chunk_rows = DEFAULT_CHUNK_ROWS
        if chunk_rows is not None:
            if not isinstance(chunk_rows, int) or chunk_rows < 1:
                raise ValueError(
                    f"input {context.name!r}: chunk_rows must be a positive integer, not {chunk_rows!r}"
                )
            return FrameChunks(_streamed(engine_for(self.url), query, chunk_rows))
        # Input metadata `key_order`: rows in primary-key order, for an asset whose result
        # depends on row order (the delay model's seeded sampling); rows otherwise lie in
        # whatever order ingest and upserts left them. Sorting costs PostgreSQL about 1.3 s
        # per million rows, so only those inputs ask for it.
        if _plain(context.definition_metadata.get("key_order")):
            key = [quote(c.name) for c in spec.table.primary_key.columns]
            query += f" ORDER BY {', '.join(key)}" if key else ""
        with engine_for(self.url).connect() as connection:
            return pd.read_sql_query(sa.text(query), connection)


def _write_frames(
    engine: sa.Engine, spec: _WriteSpec, chunks: Iterable[pd.DataFrame] | Iterable[CsvFrame]
) -> dict[str, Any]:
    totals = WriteTotals()
    if spec.mode == "replace":
        with engine.begin() as connection:
            connection.execute(sa.text(f"DELETE FROM {spec.qualified}"))
            for frame in chunks:
                totals.add(write_frame(connection, spec.table, frame, "append"))
    else:
        for frame in chunks:
            totals.add(
                in_transaction(
                    engine,
                    partial(
                        write_frame,
                        table=spec.table,
                        frame=frame,
                        mode=spec.mode,
                        primary_key=spec.primary_key,
                        update_columns=spec.update_columns,
                    ),
                )
            )
    metadata: dict[str, Any] = {
        "write_mode": spec.mode,
        "rows_written": MetadataValue.int(totals.rows),
        "chunks": MetadataValue.int(totals.chunks),
    }
    if spec.mode == "upsert":
        # An asset may name what an insert and an update mean for its table (new version, unchanged).
        inserted_as = spec.counts_as.get("inserted", "rows_inserted")
        updated_as = spec.counts_as.get("updated", "rows_updated")
        metadata[inserted_as] = MetadataValue.int(totals.inserted)
        metadata[updated_as] = MetadataValue.int(totals.updated)
    return metadata


def _write_batches(engine: sa.Engine, spec: _WriteSpec, batches: TableBatches) -> dict[str, Any]:
    written: dict[str, int] = {}
    count = 0
    for batch in batches.batches:
        if spec.name not in {part.table for part in batch.tables}:
            raise ValueError(f"a TableBatch written for {spec.name} must include rows (or none) for it")
        in_transaction(engine, partial(write_table_batch, batch=batch))
        count += 1
        for part in batch.tables:
            written[part.table] = written.get(part.table, 0) + part.rows
    return {
        "write_mode": "replace_keys",
        "rows_written": MetadataValue.int(written.get(spec.name, 0)),
        "rows_written_by_table": MetadataValue.json(written),
        "batches": MetadataValue.int(count),
    }


def write_table_batch(connection: sa.Connection, batch: TableBatch) -> None:
    """Write one TableBatch in the caller's transaction."""
    for part in batch.tables:
        replace_keys(
            connection, declared_table(part.table), batch.key_column, batch.keys, part.path, part.rows
        )


def _streamed(engine: sa.Engine, query: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    # stream_results: a server-side cursor, so only one chunk is ever held in memory.
    with engine.connect().execution_options(stream_results=True, max_row_buffer=chunk_rows) as connection:
        yield from pd.read_sql_query(sa.text(query), connection, chunksize=chunk_rows)


def _preview(connection: sa.Connection, spec: _WriteSpec) -> str:
    """A Markdown table of a few rows, personal columns masked."""
    frame = pd.read_sql_query(sa.select(spec.table).limit(spec.preview_rows), connection)
    for column in spec.masked_columns:
        if column in frame:
            frame[column] = frame[column].map(lambda v: "***" if v is not None else None)
    return frame.to_markdown(index=False) if not frame.empty else "(no rows)"


@dataclass(frozen=True)
class _WriteSpec:
    name: str
    table: sa.Table
    mode: str
    primary_key: tuple[str, ...]
    update_columns: tuple[str, ...] | None
    counts_as: Mapping[str, str]
    preview_rows: int
    masked_columns: tuple[str, ...]

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
        return cls(
            name,
            table,
            mode,
            primary_key,
            tuple(update) if update is not None else None,
            dict(_plain(metadata.get("write_counts_as")) or {}),
            int(_plain(metadata.get("preview_rows")) or 0),
            tuple(_plain(metadata.get("masked_columns")) or ()),
        )


def _plain(value: Any) -> Any:
    """Definition metadata arrives as MetadataValue objects in some contexts; unwrap them."""
    return getattr(value, "value", value)
