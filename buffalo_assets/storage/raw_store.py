"""The raw store: what Buffalo said, versioned, never edited.

`raw.order_versions` holds one row per distinct payload of an order (primary key
`(order_id, payload_sha256)`): fetching an unchanged payload only moves its
`last_fetched_at`; a changed one adds a row. `raw.orders` shows the version fetched most
recently. Nothing here deletes anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import pandas as pd
import sqlalchemy as sa

from buffalo_assets.orders.records import FetchedOrder, FetchFailure
from buffalo_assets.orders.vocabulary import STATUS_NAME, is_final_status
from buffalo_assets.storage.tables import fetch_errors, list_walks

VERSION_COLUMNS = [
    "order_id",
    "payload",
    "payload_sha256",
    "first_fetched_at",
    "last_fetched_at",
    "run_id",
]


def canonical_json(payload: Any) -> str:
    """One text per meaning: sorted keys, no insignificant whitespace."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_sha256(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def version_frame(
    orders: Sequence[FetchedOrder], run_id: str | None, fetched_at: datetime
) -> tuple[pd.DataFrame, list[FetchFailure]]:
    """Rows for `raw.order_versions` (upserted on (order_id, payload_sha256)), and the orders
    whose payload PostgreSQL cannot store as jsonb (a NUL character), as failures."""
    kept: list[FetchedOrder] = []
    texts: list[str] = []
    rejected: list[FetchFailure] = []
    for order in orders:
        text = canonical_json(order.payload)
        if "\\u0000" in text:
            rejected.append(
                FetchFailure(
                    order.order_id,
                    "unstorable_payload",
                    "the detail contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store",
                    None,
                    order.attempts,
                )
            )
            continue
        kept.append(order)
        texts.append(text)
    frame = pd.DataFrame(
        {
            "order_id": [order.order_id for order in kept],
            "payload": texts,
            "payload_sha256": [payload_sha256(text) for text in texts],
            "first_fetched_at": fetched_at,
            "last_fetched_at": fetched_at,
            "run_id": run_id,
        },
        columns=VERSION_COLUMNS,
    )
    return frame, rejected


def known_order_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT order_id FROM raw.order_ids")).scalars())


def order_ids_to_fetch(engine: sa.Engine, *, full_refresh: bool) -> list[str]:
    """Ids never fetched, and ids whose latest stored status is not final (or all ids), newest first.

    "Final" is decided in Python by the order vocabulary, the same rule that gives the
    transform's stage and `is_terminal`, so an order the core tables call delivered is never
    refetched and one they do not is never skipped. The status travels as its JSON text
    (`"Delivered"`, `null`, `5`, ...) so that the rule sees the value the transform sees;
    the few distinct texts are decided once each.
    """
    query = sa.text(
        f"""
        SELECT i.order_id, o.order_id IS NULL AS never_fetched, (o.payload -> '{STATUS_NAME}')::text
        FROM raw.order_ids AS i
        LEFT JOIN raw.orders AS o USING (order_id)
        ORDER BY i.first_seen_at DESC, i.order_id DESC
        """
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        order_id
        for order_id, never_fetched, status_json in rows
        if full_refresh or never_fetched or not _final_status_json(status_json)
    ]


@lru_cache(maxsize=4096)
def _final_status_json(status_json: str | None) -> bool:
    return status_json is not None and is_final_status(json.loads(status_json))


def record_fetch_errors(engine: sa.Engine, failures: Iterable[FetchFailure], run_id: str | None) -> int:
    rows = [
        {
            "order_id": failure.order_id,
            "kind": failure.kind,
            "http_status": failure.http_status,
            "message": failure.message,
            "run_id": run_id,
        }
        for failure in failures
    ]
    if rows:
        with engine.begin() as connection:
            connection.execute(fetch_errors.insert(), rows)
    return len(rows)


def last_full_walk(engine: sa.Engine) -> datetime | None:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.max(list_walks.c.walked_at)).where(list_walks.c.full_walk)
        ).scalar_one()


def full_walk_due(engine: sa.Engine, now: datetime, every: timedelta) -> bool:
    previous = last_full_walk(engine)
    return previous is None or now - previous >= every


def record_list_walk(
    engine: sa.Engine,
    *,
    run_id: str | None,
    walked_at: datetime,
    full_walk: bool,
    pages: int,
    ids_seen: int,
    new_ids: int,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            list_walks.insert().values(
                run_id=run_id,
                walked_at=walked_at,
                full_walk=full_walk,
                pages=pages,
                ids_seen=ids_seen,
                new_ids=new_ids,
            )
        )
