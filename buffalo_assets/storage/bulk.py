"""Bulk writes: COPY rows into a temporary table, then merge them with one INSERT.

The IO manager's building blocks: DataFrames (`write_frame`), plain rows (`write_rows`),
and rows spilled to a CSV file (`spill_rows`, written back by `replace_keys`). The caller
owns the transaction.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import psycopg2.errors
import sqlalchemy as sa

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

NULL_MARKER = "<<buffalo:null:5f0c>>"
TRANSACTION_ATTEMPTS = 3
T = TypeVar("T")
log = logging.getLogger(__name__)


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """A lost connection, a deadlock or a serialization failure: the batch can simply be redone."""
    return exc.connection_invalidated or isinstance(
        exc.orig, psycopg2.errors.DeadlockDetected | psycopg2.errors.SerializationFailure
    )


def in_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    """Run `work` in one transaction, redoing it (whole) if the connection dropped or it deadlocked.

    Every batch write is idempotent (an upsert, or a delete-then-insert of the same rows), so
    redoing it converges to the same state; a batch is never half-written.
    """
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                return work(connection)
        except sa.exc.DBAPIError as exc:
            if attempt == TRANSACTION_ATTEMPTS or not _transient(exc):
                raise
            log.warning("redoing a batch after %s (attempt %d)", type(exc.orig).__name__, attempt)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class FrameWrite:
    rows: int = 0
    inserted: int = 0
    updated: int = 0


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def qualified_name(table: sa.Table) -> str:
    return f"{quote(table.schema or 'public')}.{quote(table.name)}"


@dataclass(frozen=True)
class CsvFrame:
    """A DataFrame already serialised for COPY (`as_csv`): the CSV work done before the write."""

    columns: tuple[str, ...]
    text: str
    rows: int


def as_csv(table: sa.Table, frame: pd.DataFrame) -> CsvFrame:
    """`frame` as `write_frame` would COPY it into the declared `table`."""
    frame = _integers_as_integers(table, frame)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep=NULL_MARKER, quoting=csv.QUOTE_ALL)
    return CsvFrame(tuple(str(c) for c in frame.columns), buffer.getvalue(), len(frame))


def rows_as_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> CsvFrame:
    """Rows (tuples in the order of `columns`) serialised for COPY as `as_csv` would, without
    pandas: the ingest step's outputs, whose process then never imports it."""
    buffer = io.StringIO()
    marker = NULL_MARKER
    _copy_writer(buffer).writerows([marker if value is None else value for value in row] for row in rows)
    return CsvFrame(tuple(columns), buffer.getvalue(), len(rows))


def write_frame(
    connection: sa.Connection,
    table: sa.Table,
    frame: pd.DataFrame | CsvFrame,
    mode: str,
    primary_key: Sequence[str] = (),
    update_columns: Sequence[str] | None = None,
) -> FrameWrite:
    """Append or upsert `frame` into the declared `table`; returns rows inserted/updated.

    Upsert conflicts on `primary_key` update `update_columns` (default: every non-key
    column; empty: leave the stored row alone).
    """
    if not isinstance(frame, CsvFrame):
        frame = as_csv(table, frame)
    if not frame.rows:
        return FrameWrite()
    return _copy_and_merge(
        connection,
        table,
        list(frame.columns),
        io.StringIO(frame.text),
        frame.rows,
        mode,
        primary_key,
        update_columns,
    )


def write_rows(
    connection: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    mode: str,
    primary_key: Sequence[str] = (),
    update_columns: Sequence[str] | None = None,
) -> FrameWrite:
    """`write_frame` for plain rows (dicts with every column of `table`), without pandas.

    The transform writes about a million event rows per 100,000 orders; serialising
    them with the csv module directly is much cheaper than building DataFrames first.
    """
    if not rows:
        return FrameWrite()
    buffer = io.StringIO()
    _write_csv(buffer, table, rows)
    columns = [c.name for c in table.columns]
    return _copy_and_merge(connection, table, columns, buffer, len(rows), mode, primary_key, update_columns)


def spill_rows(path: Path, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Write rows (dicts with every column of `table`) to a CSV file `replace_keys` can COPY.

    Spilling a batch to disk instead of holding it lets a step prepare many batches
    before handing them to the IO manager, with memory bounded by one batch.
    """
    with path.open("w", newline="", encoding="utf-8") as file:
        return _write_csv(file, table, rows)


def replace_keys(
    connection: sa.Connection,
    table: sa.Table,
    key_column: str,
    keys: Sequence[str],
    spilled: Path | None,
    rows: int,
) -> FrameWrite:
    """Delete the rows of `table` whose `key_column` is in `keys`, then insert the spilled rows."""
    if key_column not in table.c:
        raise ValueError(f"key column {key_column!r} is not in the declared table {qualified_name(table)}")
    if keys:
        connection.execute(
            sa.text(f"DELETE FROM {qualified_name(table)} WHERE {quote(key_column)} = ANY(:keys)"),
            {"keys": list(keys)},
        )
    if spilled is None or not rows:
        return FrameWrite()
    columns = [c.name for c in table.columns]
    with spilled.open(newline="", encoding="utf-8") as file:
        return _copy_and_merge(connection, table, columns, file, rows, "append", (), None)


def _copy_writer(file: IO[str]) -> Any:
    """A CSV writer in the form `_copy_and_merge` COPYs: every field quoted, NULL_MARKER for None."""
    return csv.writer(file, quoting=csv.QUOTE_ALL, lineterminator="\n")


def _write_csv(file: IO[str], table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
    columns = [c.name for c in table.columns]
    marker = NULL_MARKER
    _copy_writer(file).writerows([marker if row[c] is None else row[c] for c in columns] for row in rows)
    return len(rows)


def _copy_and_merge(
    connection: sa.Connection,
    table: sa.Table,
    columns: list[str],
    buffer: IO[str],
    rows: int,
    mode: str,
    primary_key: Sequence[str],
    update_columns: Sequence[str] | None,
) -> FrameWrite:
    declared = {c.name for c in table.columns}
    unknown = [c for c in columns if c not in declared]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the declared table {qualified_name(table)}")
    target = qualified_name(table)
    column_list = ", ".join(quote(c) for c in columns)
    connection.execute(
        sa.text(f"CREATE TEMP TABLE _incoming (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP")
    )
    # Every field quoted (a bare carriage return would otherwise end a CSV line), with a
    # NULL marker that FORCE_NULL turns back into NULL even though it is quoted.
    buffer.seek(0)
    raw: Any = connection.connection.dbapi_connection  # psycopg2's, for copy_expert
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.copy_expert(
            f"COPY _incoming ({column_list}) FROM STDIN "
            f"WITH (FORMAT csv, NULL '{NULL_MARKER}', FORCE_NULL ({column_list}))",
            buffer,
        )
    if mode in ("append", "replace"):
        connection.execute(
            sa.text(f"INSERT INTO {target} ({column_list}) SELECT {column_list} FROM _incoming")
        )
        written = FrameWrite(rows=rows, inserted=rows)
    elif mode == "upsert":
        written = _merge(connection, target, column_list, columns, primary_key, update_columns, rows)
    else:
        raise ValueError(f"unknown write mode {mode!r}")
    # On failure the transaction's rollback discards the temporary table instead.
    connection.execute(sa.text("DROP TABLE _incoming"))
    return written


def _integers_as_integers(table: sa.Table, frame: pd.DataFrame) -> pd.DataFrame:
    """pandas turns an integer column with a missing value into floats ("3.0"), which an
    integer column refuses; write such columns as nullable integers."""
    floats = [
        c.name
        for c in table.columns
        if isinstance(c.type, sa.Integer) and c.name in frame and frame[c.name].dtype.kind == "f"
    ]
    if not floats:
        return frame
    return frame.astype({name: "Int64" for name in floats})


def _merge(
    connection: sa.Connection,
    target: str,
    column_list: str,
    columns: list[str],
    primary_key: Sequence[str],
    update_columns: Sequence[str] | None,
    rows: int,
) -> FrameWrite:
    keys = ", ".join(quote(c) for c in primary_key)
    updates = [c for c in columns if c not in primary_key] if update_columns is None else list(update_columns)
    if updates:
        assignments = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in updates)
        conflict = f"ON CONFLICT ({keys}) DO UPDATE SET {assignments}"
    else:
        conflict = f"ON CONFLICT ({keys}) DO NOTHING"
    # DISTINCT ON: a key twice in one frame would make ON CONFLICT DO UPDATE fail. ORDER BY:
    # concurrent writers then lock overlapping keys in the same order, so they do not deadlock.
    flags = (
        connection.execute(
            sa.text(
                f"INSERT INTO {target} ({column_list}) "
                f"SELECT DISTINCT ON ({keys}) {column_list} FROM _incoming ORDER BY {keys} "
                f"{conflict} RETURNING (xmax = 0) AS inserted"
            )
        )
        .scalars()
        .all()
    )
    inserted = sum(1 for flag in flags if flag)
    return FrameWrite(rows=rows, inserted=inserted, updated=len(flags) - inserted)
