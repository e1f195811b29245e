"""The raw store: what Buffalo said, versioned, never edited; and the ingest's quarantines.

`raw.order_versions` holds one row per distinct payload of an order (primary key
`(order_id, payload_sha256)`): fetching an unchanged payload only moves its
`last_fetched_at`; a changed one adds a row. `raw.orders` shows the version fetched most
recently. `raw.order_observations` keeps the sequence: a row whenever a fetch saw another
payload than the one seen before it (A, B, A again: three rows, two versions). Nothing
here deletes a raw row.

Quarantines (`ops`): `ops.gone_orders` counts, across runs, the orders whose detail fails
for good and holds back those that failed `gone_after_failures` runs in a row (fetched
again only by the periodic re-check); `ops.unstorable_payloads` keeps, byte for byte, the
details that cannot be stored as canonical JSON. Which orders a run fetches (`plan_fetch`)
follows from both, from the final statuses, and from the rolling re-verification of final
orders (least recently fetched first).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from buffalo_assets.orders.records import FetchedOrder, FetchFailure
from buffalo_assets.orders.vocabulary import STATUS_NAME, is_final_status
from buffalo_assets.storage.tables import fetch_errors, list_walks

# Failure kinds that mean the detail is not there for good (Buffalo's "does not exist"
# answer, or a 4xx other than 429), as opposed to the API being unwell (retried kinds).
GONE_KINDS = frozenset({"detail_error", "http_error"})
OBSERVATION_BATCH_ROWS = 20_000

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


@dataclass(frozen=True)
class UnstorablePayload:
    """A detail that cannot be stored canonically: why (and where in it), and its raw bytes."""

    order_id: str
    payload_sha256: str
    reason: str
    body: bytes


def version_rows(
    orders: Sequence[FetchedOrder], run_id: str | None, fetched_at: datetime
) -> tuple[list[tuple[Any, ...]], list[UnstorablePayload]]:
    """Rows for `raw.order_versions` (upserted on (order_id, payload_sha256)), as tuples in
    the order of VERSION_COLUMNS, and the orders whose payload has no canonical JSON form
    PostgreSQL can store (a number out of the double range such as 1e400, a NUL character):
    those are kept aside, raw bytes and all."""
    rows: list[tuple[Any, ...]] = []
    rejected: list[UnstorablePayload] = []
    for order in orders:
        try:
            text: str | None = canonical_json(order.payload)
        except ValueError:  # an out-of-range number was read as infinity
            text = None
        if text is None or "\\u0000" in text:
            rejected.append(unstorable(order))
            continue
        rows.append((order.order_id, text, payload_sha256(text), fetched_at, fetched_at, run_id))
    return rows, rejected


def unstorable(order: FetchedOrder) -> UnstorablePayload:
    """The quarantine record of a payload `version_rows` cannot store."""
    lenient = json.dumps(order.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    reason = unstorable_reason(order.payload) or "the detail has no canonical JSON form"
    body = order.body if order.body is not None else lenient.encode("utf-8")
    return UnstorablePayload(order.order_id, payload_sha256(lenient), reason, body)


def unstorable_reason(value: Any, path: str = "") -> str | None:
    """What makes `value` unstorable and where (`boxList[0].detaillist[1].declaredvalue`), or None."""
    here = path or "the top level"
    if isinstance(value, float) and not math.isfinite(value):
        return (
            f"a number out of the double-precision range at {here} (such as 1e400): "
            "it has no canonical JSON form"
        )
    if isinstance(value, str):
        if "\x00" in value:
            return f"a NUL character (\\u0000) at {here}, which PostgreSQL jsonb cannot store"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return f"a NUL character (\\u0000) in a key at {here}, which PostgreSQL jsonb cannot store"
            found = unstorable_reason(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable_reason(item, f"{path}[{index}]")
            if found:
                return found
    return None


def record_unstorable(
    engine: sa.Engine, payloads: Sequence[UnstorablePayload], run_id: str | None, seen_at: datetime
) -> int:
    """Quarantine payloads in `ops.unstorable_payloads`; returns how many were not there yet.

    The same payload seen again only moves `last_seen_at` (and keeps its newest bytes).
    """
    if not payloads:
        return 0
    statement = sa.text(
        """
        INSERT INTO ops.unstorable_payloads
               (order_id, payload_sha256, reason, body, first_seen_at, last_seen_at, run_id)
        VALUES (:order_id, :payload_sha256, :reason, :body, :seen_at, :seen_at, :run_id)
        ON CONFLICT (order_id, payload_sha256) DO UPDATE
           SET last_seen_at = EXCLUDED.last_seen_at, body = EXCLUDED.body
        RETURNING (xmax = 0) AS inserted
        """
    )
    new = 0
    with engine.begin() as connection:
        for payload in payloads:
            row = {
                "order_id": payload.order_id,
                "payload_sha256": payload.payload_sha256,
                "reason": payload.reason,
                "body": payload.body,
                "seen_at": seen_at,
                "run_id": run_id,
            }
            new += bool(connection.execute(statement, row).scalar_one())
    return new


def release_unstorable(engine: sa.Engine, order_ids: Iterable[str]) -> int:
    """Orders of which a later payload was stored leave `ops.unstorable_payloads`."""
    ids = sorted(set(order_ids))
    if not ids:
        return 0
    with engine.begin() as connection:
        return connection.execute(
            sa.text("DELETE FROM ops.unstorable_payloads WHERE order_id = ANY(:ids)"), {"ids": ids}
        ).rowcount


def count_unstorable(engine: sa.Engine) -> int:
    """Orders with a payload in quarantine."""
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(DISTINCT order_id) FROM ops.unstorable_payloads")
        ).scalar_one()


def known_order_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT order_id FROM raw.order_ids")).scalars())


@dataclass(frozen=True)
class FetchPlan:
    """Which orders a run fetches, and why.

    `order_ids`: orders never fetched or not final (newest first), then the final orders
    due for re-verification, then the quarantined gone orders due for their re-check.
    """

    order_ids: list[str]
    reverify: dict[str, str] = field(default_factory=dict)  # final order -> its stored payload_sha256
    recheck: frozenset[str] = frozenset()
    gone_held_back: int = 0  # quarantined gone orders not fetched this run
    gone_known: frozenset[str] = field(default=frozenset())  # orders with a row in ops.gone_orders
    unstorable_known: frozenset[str] = field(default=frozenset())  # orders in ops.unstorable_payloads

    @property
    def counted(self) -> int:
        """Orders whose failure counts toward the failure share (re-checks of gone ones do not)."""
        return len(self.order_ids) - len(self.recheck)


def plan_fetch(
    engine: sa.Engine,
    *,
    full_refresh: bool,
    now: datetime,
    reverify_share: float = 0.0,
    recheck_every: timedelta = timedelta(days=7),
) -> FetchPlan:
    """The orders to fetch: never fetched, not final, due for re-verification or re-check.

    "Final" is decided in Python by the order vocabulary, the same rule that gives the
    transform's stage and `is_terminal`, so an order the core tables call delivered is not
    fetched by every run and one they do not is never skipped. The status travels as its
    JSON text (`"Delivered"`, `null`, `5`, ...) so that the rule sees the value the
    transform sees; the few distinct texts are decided once each.

    Of the final orders, `ceil(reverify_share * count)` are fetched again, those fetched
    least recently first, so that over `1 / reverify_share` runs every one is verified.
    A quarantined gone order is held back until `recheck_every` after its last failure.
    `full_refresh` fetches everything, quarantined orders included (as re-checks).
    """
    query = sa.text(
        f"""
        SELECT i.order_id, o.order_id IS NULL AS never_fetched, (o.payload -> '{STATUS_NAME}')::text,
               o.last_fetched_at, o.payload_sha256, g.order_id IS NOT NULL AS gone_known,
               g.quarantined_at IS NOT NULL AS quarantined, g.last_failed_at,
               EXISTS (SELECT 1 FROM ops.unstorable_payloads AS u WHERE u.order_id = i.order_id)
        FROM raw.order_ids AS i
        LEFT JOIN raw.orders AS o USING (order_id)
        LEFT JOIN ops.gone_orders AS g USING (order_id)
        ORDER BY i.first_seen_at DESC, i.order_id DESC
        """
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    regular: list[str] = []
    recheck: list[str] = []
    final: list[tuple[datetime, str, str]] = []
    held_back = 0
    gone_known: set[str] = set()
    unstorable_known: set[str] = set()
    for order_id, never_fetched, status_json, fetched_at, sha, known, quarantined, failed_at, held in rows:
        if known:
            gone_known.add(order_id)
        if held:
            unstorable_known.add(order_id)
        if quarantined:
            if full_refresh or failed_at + recheck_every <= now:
                recheck.append(order_id)
            else:
                held_back += 1
        elif full_refresh or never_fetched or not _final_status_json(status_json):
            regular.append(order_id)
        else:
            final.append((fetched_at, order_id, sha))
    due = math.ceil(reverify_share * len(final)) if reverify_share > 0 else 0
    reverify = {order_id: sha for _, order_id, sha in heapq.nsmallest(due, final)}
    return FetchPlan(
        order_ids=regular + list(reverify) + recheck,
        reverify=reverify,
        recheck=frozenset(recheck),
        gone_held_back=held_back,
        gone_known=frozenset(gone_known),
        unstorable_known=frozenset(unstorable_known),
    )


def order_ids_to_fetch(engine: sa.Engine, *, full_refresh: bool) -> list[str]:
    """Ids never fetched, and ids whose latest stored status is not final (or all ids), newest
    first: `plan_fetch` without re-verification, at this moment."""
    return plan_fetch(engine, full_refresh=full_refresh, now=datetime.now(UTC)).order_ids


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


# -- gone orders ---------------------------------------------------------------------------

RECORD_GONE_SQL = """
INSERT INTO ops.gone_orders AS g
       (order_id, failures, kind, http_status, message, first_failed_at, last_failed_at,
        quarantined_at, run_id)
SELECT f.order_id, 1, f.kind, f.http_status, f.message, :now, :now,
       CASE WHEN 1 >= :limit THEN CAST(:now AS timestamptz) END, :run_id
FROM unnest(CAST(:ids AS text[]), CAST(:kinds AS text[]), CAST(:statuses AS integer[]),
            CAST(:messages AS text[])) AS f(order_id, kind, http_status, message)
ON CONFLICT (order_id) DO UPDATE SET
    -- A step retried within the same run counts once.
    failures = g.failures + CASE WHEN g.run_id IS DISTINCT FROM EXCLUDED.run_id THEN 1 ELSE 0 END,
    kind = EXCLUDED.kind,
    http_status = EXCLUDED.http_status,
    message = EXCLUDED.message,
    last_failed_at = EXCLUDED.last_failed_at,
    quarantined_at = COALESCE(
        g.quarantined_at,
        CASE WHEN g.failures + CASE WHEN g.run_id IS DISTINCT FROM EXCLUDED.run_id THEN 1 ELSE 0 END
                  >= :limit
             THEN EXCLUDED.last_failed_at END
    ),
    run_id = EXCLUDED.run_id
RETURNING quarantined_at = CAST(:now AS timestamptz) AS newly_quarantined
"""


@dataclass(frozen=True)
class GoneCounts:
    newly_quarantined: int
    recovered: int  # left quarantine: answered on its re-check
    quarantined: int  # in quarantine after this run


def record_gone(
    engine: sa.Engine,
    failures: Sequence[FetchFailure],
    answered: Iterable[str],
    *,
    run_id: str | None,
    now: datetime,
    limit: int,
) -> GoneCounts:
    """Count this run's for-good failures in `ops.gone_orders` (quarantining an order at its
    `limit`-th run in a row) and forget the orders that answered (`answered`: orders known
    there that were fetched, leaving quarantine if they were in it)."""
    gone = {f.order_id: f for f in failures if f.kind in GONE_KINDS}
    answered_ids = sorted(set(answered) - set(gone))
    newly = recovered = 0
    with engine.begin() as connection:
        if gone:
            rows = list(gone.values())
            flags = connection.execute(
                sa.text(RECORD_GONE_SQL),
                {
                    "ids": [f.order_id for f in rows],
                    "kinds": [f.kind for f in rows],
                    "statuses": [f.http_status for f in rows],
                    "messages": [f.message for f in rows],
                    "now": now,
                    "limit": limit,
                    "run_id": run_id,
                },
            ).scalars()
            newly = sum(1 for flag in flags if flag)
        if answered_ids:
            left = connection.execute(
                sa.text(
                    "DELETE FROM ops.gone_orders WHERE order_id = ANY(:ids) "
                    "RETURNING quarantined_at IS NOT NULL"
                ),
                {"ids": answered_ids},
            ).scalars()
            recovered = sum(1 for flag in left if flag)
        quarantined = connection.execute(
            sa.text("SELECT count(*) FROM ops.gone_orders WHERE quarantined_at IS NOT NULL")
        ).scalar_one()
    return GoneCounts(newly_quarantined=newly, recovered=recovered, quarantined=quarantined)


# -- observations --------------------------------------------------------------------------

RECORD_OBSERVATIONS_SQL = """
INSERT INTO raw.order_observations (order_id, fetched_at, payload_sha256, run_id)
SELECT n.order_id, n.fetched_at, n.payload_sha256, :run_id
FROM unnest(CAST(:ids AS text[]), CAST(:shas AS text[]), CAST(:times AS timestamptz[]))
     AS n(order_id, payload_sha256, fetched_at)
WHERE n.payload_sha256 IS DISTINCT FROM (
    SELECT o.payload_sha256 FROM raw.order_observations AS o
    WHERE o.order_id = n.order_id
    ORDER BY o.fetched_at DESC
    LIMIT 1
)
ON CONFLICT (order_id, fetched_at) DO NOTHING
RETURNING order_id
"""


def record_observations(
    engine: sa.Engine, batches: Iterable[Sequence[tuple[str, str, datetime]]], run_id: str | None
) -> set[str]:
    """Add an observation for each fetched (order_id, payload_sha256, last_fetched_at) whose
    payload differs from the order's latest observation; returns the orders that got one.

    Called after the versions are stored: if the process dies in between, the next fetch
    of the order records the observation instead (at that fetch's time).
    """
    observed: set[str] = set()

    def write(rows: list[tuple[str, str, datetime]]) -> None:
        with engine.begin() as connection:
            observed.update(
                connection.execute(
                    sa.text(RECORD_OBSERVATIONS_SQL),
                    {
                        "ids": [order_id for order_id, _, _ in rows],
                        "shas": [sha for _, sha, _ in rows],
                        "times": [fetched_at for _, _, fetched_at in rows],
                        "run_id": run_id,
                    },
                ).scalars()
            )

    pending: list[tuple[str, str, datetime]] = []
    for batch in batches:
        pending.extend(batch)
        if len(pending) >= OBSERVATION_BATCH_ROWS:
            write(pending)
            pending = []
    if pending:
        write(pending)
    return observed
