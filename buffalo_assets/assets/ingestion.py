"""Ingestion: `order_ids` (every id the account can see) and `raw_orders` (versioned details).

One step, `ingest`, materializes both (or either: it can be subset) in the `buffalo_api`
concurrency pool, so two runs never hit the API at once. With both selected it fetches the
details while the order list is still being walked, instead of walking first and fetching
after. It does the API work in its own body and returns what to store; the Postgres IO
manager writes it.
"""

import functools
import inspect
import queue
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetOut,
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    RetryPolicy,
    multi_asset,
)
from pydantic import Field

from buffalo_assets import settings
from buffalo_assets.buffalo.client import (
    BuffaloApiError,
    BuffaloAuthError,
    BuffaloClient,
    FetchedOrder,
    FetchFailure,
)
from buffalo_assets.buffalo.resource import BuffaloResource
from buffalo_assets.storage import raw_store
from buffalo_assets.storage.bulk import rows_as_csv
from buffalo_assets.storage.io_manager import CsvChunks, FrameSpill
from buffalo_assets.storage.resource import PostgresResource

OWNERS = ["team:data-platform"]
API_POOL = "buffalo_api"
CHUNK_ORDERS = 500
PROGRESS_EVERY_S = 10.0
# The freshness policy is part of the assets' definitions, so Dagster needs it when it loads
# them: the one setting read then. The step's settings are read when a run starts (IngestConfig).
FRESH_WITHIN = timedelta(hours=settings.load().freshness_hours)
ORDER_IDS = "order_ids"
RAW_ORDERS = "raw_orders"
# Retries of the `ingest` step: a walk that could not finish (the list unavailable) asks for
# up to ORDER_IDS_RETRIES, a fetch with too many failures for up to RAW_ORDERS_RETRIES.
ORDER_IDS_RETRIES = 2
RAW_ORDERS_RETRIES = 1
INGEST_RETRIES = max(ORDER_IDS_RETRIES, RAW_ORDERS_RETRIES)
# Failure kinds that a retry a few seconds later cannot fix: the server answered, and the
# answer was "no such order" (detail_error), too large, or not storable.
PERMANENT_FAILURE_KINDS = frozenset({"detail_error", "too_large", "unstorable_payload"})
# An order whose detail Buffalo answers as not existing, the same with a fresh ticket (the
# client asks again before it returns `detail_error`): news about the order, not a failure
# of the run. Recorded in ops.gone_orders on first sight, never counted in the failure share.
CONFIRMED_GONE_KINDS = frozenset({"detail_error"})
# ... unless more than `max_gone_share` of the orders asked answered so: that is a wrong
# account or base URL, not that many deletions at once, and the run fails saying so.
GONE_LISTED = 100  # ids of this run's gone orders in the metadata (the rest in ops.gone_orders)


@dataclass(frozen=True)
class IngestPolicy:
    """What one run of the ingest step does: its run config over the settings."""

    full_walk: bool
    full_walk_every: timedelta
    full_refresh: bool
    max_failure_share: float
    max_gone_share: float
    gone_after_failures: int
    gone_recheck: timedelta
    reverify_share: float


class IngestConfig(Config):
    """Run config of the `ingest` step (`ops: ingest: config:`), which materializes both assets.

    A field left unset takes its setting (`BUFFALO_...`, read when the run starts).
    """

    full_walk: bool = Field(
        default=False, description="order_ids: walk the whole order list even if a full walk ran recently"
    )
    full_walk_every_hours: float | None = Field(
        default=None,
        gt=0,
        description="order_ids: hours between full walks; in between, listing stops at the first known page "
        "(unset: BUFFALO_FULL_WALK_HOURS)",
    )
    full_refresh: bool = Field(
        default=False, description="raw_orders: fetch every known order, including delivered ones"
    )
    max_failure_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="raw_orders: fail the run when more than this share of the orders could not be fetched "
        "(unset: BUFFALO_MAX_FAILURE_SHARE)",
    )
    max_gone_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="raw_orders: orders Buffalo answers as not existing never fail the run, unless more "
        "than this share of the orders asked does (unset: BUFFALO_MAX_GONE_SHARE)",
    )
    gone_after_failures: int | None = Field(
        default=None,
        ge=1,
        description="raw_orders: quarantine an order whose detail failed for good in this many runs in a row "
        "(unset: BUFFALO_GONE_AFTER_FAILURES)",
    )
    gone_recheck_days: float | None = Field(
        default=None,
        ge=0,
        description="raw_orders: days between re-checks of a quarantined gone order "
        "(unset: BUFFALO_GONE_RECHECK_DAYS)",
    )
    reverify_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="raw_orders: share of final orders fetched again, least recently verified first "
        "(unset: BUFFALO_REVERIFY_SHARE)",
    )

    def resolved(self) -> IngestPolicy:
        """This run's policy: the run config's values, the settings (read now) for the rest."""
        current = settings.load()

        def pick(value: Any, setting: Any) -> Any:
            return setting if value is None else value

        return IngestPolicy(
            full_walk=self.full_walk,
            full_walk_every=timedelta(hours=pick(self.full_walk_every_hours, current.full_walk_hours)),
            full_refresh=self.full_refresh,
            max_failure_share=pick(self.max_failure_share, current.max_failure_share),
            max_gone_share=pick(self.max_gone_share, current.max_gone_share),
            gone_after_failures=pick(self.gone_after_failures, current.gone_after_failures),
            gone_recheck=timedelta(days=pick(self.gone_recheck_days, current.gone_recheck_days)),
            reverify_share=pick(self.reverify_share, current.reverify_share),
        )


def _retry_allowed(context: AssetExecutionContext, max_retries: int) -> bool:
    """Whether a retryable Failure may still ask for a retry.

    On the last attempt it must not: Dagster would report "Exceeded max_retries of N" as the
    step's (and so the run's) error and hide the reason in its cause. Raised as not retryable,
    the Failure's own description is the run's top-level error in the UI.
    """
    return context.retry_number < max_retries


F = TypeVar("F", bound=Callable[..., object])
TERMINATED = "The run was terminated while this step ran (from the UI, Airflow or Ctrl-C); it is not retried"


@contextmanager
def _interrupt_ends_the_step() -> Iterator[None]:
    """A run's termination ends these steps instead of retrying them.

    Dagster turns an interrupt inside a step that has a retry policy into a retry request.
    With a process per step the run's orchestrator stopped anyway; since the steps run in
    the run's own process (in_process_executor), the retry would run and the run would go on
    and succeed although it was terminated. A not-retryable Failure ends the step, the
    steps after it are skipped, and Dagster marks the run canceled.
    """
    try:
        yield
    except (DagsterExecutionInterruptedError, KeyboardInterrupt):
        raise Failure(description=TERMINATED, allow_retries=False) from None


def _ends_on_interrupt(compute: F) -> F:
    """`compute` (a function or a generator function) under `_interrupt_ends_the_step`."""
    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def generator(*args: object, **kwargs: object) -> Iterator[object]:
            with _interrupt_ends_the_step():
                yield from compute(*args, **kwargs)

        return generator  # type: ignore[return-value]

    @functools.wraps(compute)
    def function(*args: object, **kwargs: object) -> object:
        with _interrupt_ends_the_step():
            return compute(*args, **kwargs)

    return function  # type: ignore[return-value]


def _logged_in(buffalo: BuffaloResource, context: AssetExecutionContext, max_retries: int) -> BuffaloClient:
    """A client with a ticket (the resource's recent one, else a fresh login), login errors as Failures."""
    try:
        return buffalo.logged_in_client()
    except BuffaloAuthError as exc:
        # Retrying cannot fix wrong credentials; fail now with the service's reason.
        raise Failure(description=f"Buffalo login failed: {exc}", allow_retries=False) from None
    except BuffaloApiError as exc:
        raise Failure(
            description=f"Buffalo API unavailable: {exc}", allow_retries=_retry_allowed(context, max_retries)
        ) from None


def _now() -> datetime:
    return datetime.now(UTC)


class _Walk:
    """One walk of the order list: every id listed, and the new ones handed on as pages arrive.

    `run()` walks in the caller's thread; `start()` walks in a thread of its own while the
    caller fetches details, taking the new ids from `new_ids()` (which ends when the walk
    does, also when it failed: `error` then says why). Between full walks, listing stops at
    the first page whose ids are all known already, because new orders arrive at the top.
    `complete` tells a walk that reached its end from one that failed or was stopped: only
    a complete walk is stored and recorded.
    """

    def __init__(self, client: BuffaloClient, known: set[str], *, full: bool, workers: int) -> None:
        self.client, self.known, self.full, self.workers = client, known, full, workers
        self.seen: list[str] = []
        self.new: list[str] = []
        self.pages = 0
        self.complete = False
        self.error: BaseException | None = None
        self._handed: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        with closing(self.client.iter_order_pages(parallel=self.full, workers=self.workers)) as pages:
            for page in pages:
                self.pages += 1
                self.seen.extend(page.order_ids)
                for order_id in page.order_ids:
                    if order_id not in self.known:
                        self.new.append(order_id)
                        self._handed.put(order_id)
                if self._stop.is_set():
                    return
                if not self.full and page.order_ids and self.known.issuperset(page.order_ids):
                    break
        self.complete = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_here, name="buffalo-walk", daemon=True)
        self._thread.start()

    def run_here(self) -> None:
        """Walk in this thread; `error` says why if it could not finish, `new_ids()` then ends."""
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the step through `error`
            self.error = exc
        finally:
            self._handed.put(None)

    def new_ids(self) -> Iterator[str]:
        while (order_id := self._handed.get()) is not None:
            yield order_id

    def stop(self) -> None:
        """Stop after the page in hand and wait until the walk's requests are over.

        The pages not yet requested are cancelled; the step (and its pool slot) ends only
        after the ones in flight, so that no request of this run outlives it.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def failure(self, context: AssetExecutionContext) -> Failure | None:
        """The step's failure for a walk that could not finish, or None."""
        if self.error is None:
            return None
        if isinstance(self.error, BuffaloAuthError):
            return Failure(description=f"Buffalo login failed: {self.error}", allow_retries=False)
        if isinstance(self.error, BuffaloApiError):
            return Failure(
                description=f"Buffalo order list unavailable: {self.error}",
                allow_retries=_retry_allowed(context, ORDER_IDS_RETRIES),
            )
        raise self.error


def _walk_output(
    context: AssetExecutionContext,
    engine: sa.Engine,
    walk: _Walk,
    walked_at: datetime,
    **extra: MetadataValue,
) -> Output[CsvChunks]:
    """`order_ids`' output (the walk's ids, upserted by the IO manager), the walk recorded."""
    raw_store.record_list_walk(
        engine,
        run_id=context.run_id,
        walked_at=walked_at,
        full_walk=walk.full,
        pages=walk.pages,
        ids_seen=len(walk.seen),
        new_ids=len(walk.new),
    )
    metadata = {
        "total": MetadataValue.int(len(walk.known) + len(walk.new)),
        "new_since_last_run": MetadataValue.int(len(walk.new)),
        "ids_listed": MetadataValue.int(len(walk.seen)),
        "pages": MetadataValue.int(walk.pages),
        "full_walk": MetadataValue.bool(walk.full),
        **extra,
    }
    rows = [(order_id, walked_at, walked_at) for order_id in walk.seen]
    ids = rows_as_csv(("order_id", "first_seen_at", "last_seen_at"), rows)
    return Output(CsvChunks([ids]), output_name=ORDER_IDS, metadata=metadata)


class _Progress:
    """Logs how the fetch is going every PROGRESS_EVERY_S seconds: fetched, failed, orders/s."""

    def __init__(self, context: AssetExecutionContext, wanted: list[str]) -> None:
        self.context, self.wanted = context, wanted  # `wanted` grows while a walk hands on ids
        self.started = self.logged_at = time.perf_counter()
        self.fetched = self.failed = 0

    def count(self, result: FetchedOrder | FetchFailure) -> None:
        if isinstance(result, FetchFailure):
            self.failed += 1
        else:
            self.fetched += 1
        now = time.perf_counter()
        if now - self.logged_at >= PROGRESS_EVERY_S:
            self.logged_at = now
            self.log(now)

    def log(self, now: float) -> None:
        elapsed = now - self.started
        rate = self.fetched / elapsed if elapsed else 0.0
        self.context.log.info(
            f"fetched {self.fetched} of {len(self.wanted)} orders, {self.failed} failed, {rate:.0f} orders/s"
        )


ORDER_IDS_DESCRIPTION = """Every order id Solo's Buffalo account can see, with when first and last seen.

Table `raw.order_ids`. Between full walks of the order list (by default once a day),
listing stops at the first page whose ids are all known already, because new orders
arrive at the top of the list.
"""

RAW_ORDERS_DESCRIPTION = """Each order's detail exactly as Buffalo sent it, kept as append-only versions.

Table `raw.order_versions` (view `raw.orders`: the latest version of each order;
`raw.order_observations`: the sequence of payloads each order showed). Fetches orders
never fetched and orders not yet delivered, returned, cancelled or lost (`full_refresh`
fetches all), plus a rolling share of the final ones, least recently verified first
(`reverify_share`), so a status Buffalo changes later is caught. An unchanged payload
only moves `last_fetched_at`; a changed one adds a version. Orders that could not be
fetched are listed in `ops.fetch_errors` and fetched again by the next run. An order
Buffalo answers as not existing (the same with a fresh ticket) is news, not a failure:
it is recorded in `ops.gone_orders` on first sight (metadata `gone_orders`) and never
counted in the failure share; after `gone_after_failures` runs in a row it is
quarantined and only re-checked every `gone_recheck_days`. A payload that cannot be
stored canonically (1e400, NUL) is kept, raw bytes and all, in `ops.unstorable_payloads`,
and tried again when it changes.
"""


@multi_asset(
    name="ingest",
    outs={
        ORDER_IDS: AssetOut(
            description=ORDER_IDS_DESCRIPTION,
            group_name="ingestion",
            owners=OWNERS,
            kinds={"python", "postgres"},
            io_manager_key="postgres_io",
            is_required=False,
            metadata={
                "dagster/table_name": "raw.order_ids",
                "write_mode": "upsert",
                "primary_key": ["order_id"],
                "update_columns": ["last_seen_at"],
            },
        ),
        RAW_ORDERS: AssetOut(
            description=RAW_ORDERS_DESCRIPTION,
            group_name="ingestion",
            owners=OWNERS,
            kinds={"python", "postgres"},
            io_manager_key="postgres_io",
            is_required=False,
            freshness_policy=FreshnessPolicy.time_window(fail_window=FRESH_WITHIN),
            metadata={
                "dagster/table_name": "raw.order_versions",
                "write_mode": "upsert",
                "primary_key": ["order_id", "payload_sha256"],
                "update_columns": ["last_fetched_at"],
                "write_counts_as": {"inserted": "new_versions", "updated": "unchanged"},
            },
        ),
    },
    internal_asset_deps={ORDER_IDS: set(), RAW_ORDERS: {AssetKey(ORDER_IDS)}},
    can_subset=True,
    pool=API_POOL,
    retry_policy=RetryPolicy(max_retries=INGEST_RETRIES, delay=10, backoff=Backoff.EXPONENTIAL),
)
@_ends_on_interrupt
def ingest(
    context: AssetExecutionContext,
    config: IngestConfig,
    buffalo: BuffaloResource,
    postgres: PostgresResource,
) -> Iterator[Output | AssetObservation]:
    """Lists the order ids (`order_ids`) and fetches the orders' details (`raw_orders`).

    One step for both, in the `buffalo_api` pool; either asset can be materialized alone.
    With both selected, a first run and an incremental walk overlap the walk and the fetch:
    the planned orders first, then each new id once its page arrived (a first run's pages on
    `list_workers` connections of their own beside the `concurrency` detail requests). A
    later full walk, mostly known ids, walks first at `concurrency` pages at a time.
    """
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    policy = config.resolved()
    engine = postgres.get_engine()
    walk: _Walk | None = None
    walked_at = _now()
    login_started = time.perf_counter()
    client = _logged_in(buffalo, context, ORDER_IDS_RETRIES if ORDER_IDS in selected else RAW_ORDERS_RETRIES)
    login_s = MetadataValue.float(round(time.perf_counter() - login_started, 3))
    try:
        if ORDER_IDS in selected:
            known = raw_store.known_order_ids(engine)
            full = policy.full_walk or raw_store.full_walk_due(engine, walked_at, policy.full_walk_every)
            # Overlap the walk with the fetch where the walk brings the work: a first run
            # (every id new: the pages on list_workers connections keep ahead of the fetch)
            # and incremental walks (one page at a time). A later full walk lists mostly known
            # ids: it walks first, `concurrency` pages at a time, as `order_ids` alone does.
            walk_first = RAW_ORDERS not in selected or (full and bool(known))
            walk = _Walk(
                client, known, full=full, workers=client.concurrency if walk_first else client.list_workers
            )
            if walk_first:
                walk.run_here()
                failure = walk.failure(context)
                if failure is not None:
                    raise failure
                buffalo.remember_ticket(client)  # a fresh login during the walk replaced the ticket
                if RAW_ORDERS not in selected:
                    stats = client.stats.as_dict()
                    yield _walk_output(
                        context,
                        engine,
                        walk,
                        walked_at,
                        requests=MetadataValue.int(stats["requests"]),
                        retries=MetadataValue.int(stats["retries"]),
                        login_s=login_s,
                    )
                    return
            else:
                walk.start()
        yield from _fetch_and_store(context, policy, engine, buffalo, client, walk, walked_at, login_s)
    finally:
        if walk is not None:
            walk.stop()
        client.close()


def _fetch_and_store(
    context: AssetExecutionContext,
    policy: IngestPolicy,
    engine: sa.Engine,
    buffalo: BuffaloResource,
    client: BuffaloClient,
    walk: _Walk | None,
    walked_at: datetime,
    login_s: MetadataValue,
) -> Iterator[Output | AssetObservation]:
    """`raw_orders`: fetch the planned orders (and the walk's new ones), then store and judge.

    The details are spilled to a temporary file chunk by chunk, so memory stays flat; the IO
    manager then upserts the chunks. Only after that does the step record observations and
    quarantines and judge the failures, so a run that fails for too many of them still keeps
    what it fetched. A walk that could not finish fails the step before anything is stored.
    """
    run_started = _now()
    plan = raw_store.plan_fetch(
        engine,
        full_refresh=policy.full_refresh,
        now=run_started,
        reverify_share=policy.reverify_share,
        recheck_every=policy.gone_recheck,
    )
    wanted = list(plan.order_ids)

    def to_fetch() -> Iterator[str]:
        for order_id in plan.order_ids:
            if walk is not None and walk.error is not None:
                return  # the attempt fails (below): no point fetching what it will not store
            yield order_id
        if walk is not None:
            planned = set(plan.order_ids)
            for order_id in walk.new_ids():
                if order_id not in planned:
                    wanted.append(order_id)
                    yield order_id

    started, cpu_started = time.perf_counter(), time.process_time()
    progress = _Progress(context, wanted)
    failed: list[FetchFailure] = []
    answered: set[str] = set()  # fetched orders with a row in ops.gone_orders
    stored_unstorable: set[str] = set()  # stored orders with a payload in quarantine
    unstorable_seen = unstorable_new = reverified_changed = 0
    refused: BuffaloAuthError | None = None
    with FrameSpill() as spill, FrameSpill() as seen:
        fetched: list[FetchedOrder] = []
        failures: list[FetchFailure] = []

        def flush() -> None:
            nonlocal unstorable_seen, unstorable_new, reverified_changed
            rows, unstorable = raw_store.version_rows(fetched, context.run_id, _now())
            raw_store.record_fetch_errors(engine, failures, context.run_id)
            unstorable_new += raw_store.record_unstorable(engine, unstorable, context.run_id, _now())
            unstorable_seen += len(unstorable)
            answered.update(order.order_id for order in fetched if order.order_id in plan.gone_known)
            stored_unstorable.update(plan.unstorable_known.intersection(row[0] for row in rows))
            if plan.reverify:
                reverified_changed += sum(
                    1
                    for order_id, _, sha, *_ in rows
                    if order_id in plan.reverify and sha != plan.reverify[order_id]
                )
            failed.extend(failures)
            # Serialised for COPY now, while the fetch threads wait on the network, rather
            # than by the IO manager after the last detail arrived.
            spill.append(rows_as_csv(raw_store.VERSION_COLUMNS, rows))
            seen.append([(order_id, sha, fetched_at) for order_id, _, sha, _, fetched_at, _ in rows])
            fetched.clear()
            failures.clear()

        try:
            for result in client.fetch_details(to_fetch()):
                progress.count(result)
                if isinstance(result, FetchFailure):
                    failures.append(result)
                    continue
                fetched.append(result)
                if len(fetched) >= CHUNK_ORDERS:
                    flush()
        except BuffaloAuthError as exc:
            # Store what was fetched before the API stopped accepting us, then fail.
            refused = exc
        if walk is not None:
            walk.stop()
            failure = walk.failure(context)
            if failure is not None:
                raise failure  # nothing stored: the retry (or the next run) walks and fetches again
        flush()
        fetch_s = time.perf_counter() - started
        progress.log(time.perf_counter())
        stats = client.stats.as_dict()
        buffalo.remember_ticket(client)
        # Re-checks of quarantined gone orders and orders Buffalo confirmed gone do not count;
        # a payload first quarantined now does.
        fresh = [failure for failure in failed if failure.order_id not in plan.recheck]
        gone_failures = [failure for failure in fresh if failure.kind in CONFIRMED_GONE_KINDS]
        counted = [failure for failure in fresh if failure.kind not in CONFIRMED_GONE_KINDS]
        confirmed_gone = sorted(failure.order_id for failure in gone_failures)
        counted_orders = len(wanted) - len(plan.recheck)
        share = (len(counted) + unstorable_new) / counted_orders if counted_orders else 0.0
        gone = raw_store.record_gone(
            engine,
            failed,
            answered,
            run_id=context.run_id,
            now=run_started,
            limit=policy.gone_after_failures,
        )
        raw_store.release_unstorable(engine, stored_unstorable)
        metadata = {
            "orders_wanted": MetadataValue.int(len(wanted)),
            "fetched": MetadataValue.int(spill.rows),
            "failed": MetadataValue.int(len(failed)),
            "failure_kinds": MetadataValue.json(dict(Counter(failure.kind for failure in failed))),
            "failure_share": MetadataValue.float(round(share, 4)),
            "gone": MetadataValue.int(len(confirmed_gone)),
            "gone_orders": MetadataValue.json(confirmed_gone[:GONE_LISTED]),
            "reverified": MetadataValue.int(len(plan.reverify)),
            "reverified_changed": MetadataValue.int(reverified_changed),
            "gone_quarantined": MetadataValue.int(gone.quarantined),
            "gone_newly_quarantined": MetadataValue.int(gone.newly_quarantined),
            "gone_held_back": MetadataValue.int(plan.gone_held_back),
            "gone_rechecked": MetadataValue.int(len(plan.recheck)),
            "gone_recovered": MetadataValue.int(gone.recovered),
            "unstorable": MetadataValue.int(unstorable_seen),
            "unstorable_new": MetadataValue.int(unstorable_new),
            "unstorable_quarantined": MetadataValue.int(raw_store.count_unstorable(engine)),
            # Every request of the step: with order_ids in the run, the list's pages too.
            "requests": MetadataValue.int(stats["requests"]),
            "retries": MetadataValue.int(stats["retries"]),
            "relogins": MetadataValue.int(stats["relogins"]),
            "login_s": login_s,  # 0 when the resource's recent ticket was used
            "fetch_s": MetadataValue.float(round(fetch_s, 3)),
            # The demo and the load test read elapsed_s: the fetch, as write_s is the IO manager's.
            "elapsed_s": MetadataValue.float(round(fetch_s, 3)),
            "orders_per_s": MetadataValue.float(round(spill.rows / fetch_s, 1) if fetch_s else 0.0),
            "cpu_ms_per_order": MetadataValue.float(
                round(1000 * (time.process_time() - cpu_started) / max(spill.rows, 1), 3)
            ),
            "peak_rss_mb": MetadataValue.float(
                round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            ),
        }
        if walk is not None and walk.complete:
            # The ids before the versions (Dagster hands each yielded output to the IO manager
            # before this generator resumes). A walk stopped by a refused login is neither
            # stored nor recorded: the next run walks again.
            yield _walk_output(context, engine, walk, walked_at)
        yield Output(spill.read_back_csv(), output_name=RAW_ORDERS, metadata=metadata)
        # The versions are stored: now the sequence of what each order showed.
        observed = raw_store.record_observations(engine, seen.read_back_rows(), context.run_id)
    yield AssetObservation(
        asset_key=AssetKey(RAW_ORDERS), metadata={"observations": MetadataValue.int(len(observed))}
    )
    if refused is not None:
        raise Failure(description=f"Buffalo login failed: {refused}", allow_retries=False)
    gone_share = len(confirmed_gone) / counted_orders if counted_orders else 0.0
    if gone_share > policy.max_gone_share:
        raise Failure(
            description=(
                f"{len(confirmed_gone)} of {counted_orders} orders ({gone_share:.0%}) answered that they "
                f"do not exist: {_main_reason(gone_failures)}; "
                f"more than the {policy.max_gone_share:.0%} a run takes as deletions "
                "(BUFFALO_MAX_GONE_SHARE), so the run failed: is this the account the stored orders "
                f"came from (BUFFALO_BASE_URL, BUFFALO_USERNAME)? The {spill.rows} fetched were stored; "
                "the others keep what was stored before, see ops.gone_orders"
            ),
            metadata=metadata,
            allow_retries=False,
        )
    if share > policy.max_failure_share:
        # The run's top-level error in the UI is this step's failure: it must say why (see
        # _retry_allowed). A failure no retry can fix is not retried at all, nor is one that
        # only payloads now in quarantine pushed over the limit.
        permanent = all(failure.kind in PERMANENT_FAILURE_KINDS for failure in counted) or (
            len(counted) / counted_orders <= policy.max_failure_share
        )
        unstorable_note = (
            f" ({unstorable_new} of them fetched but not storable, see ops.unstorable_payloads)"
            if unstorable_new
            else ""
        )
        reason = _main_reason(counted) if counted else "payloads that cannot be stored"
        raise Failure(
            description=(
                f"{len(counted) + unstorable_new} of {counted_orders} orders ({share:.0%}) could not be "
                f"fetched: {reason}{unstorable_note}; more than the allowed "
                f"{policy.max_failure_share:.0%}, so the run failed. The {spill.rows} fetched were "
                "stored; see ops.fetch_errors for the rest"
            ),
            metadata=metadata,
            allow_retries=not permanent and _retry_allowed(context, RAW_ORDERS_RETRIES),
        )
    if confirmed_gone:
        shown = ", ".join(confirmed_gone[:10]) + (" ..." if len(confirmed_gone) > 10 else "")
        context.log.warning(
            f"{len(confirmed_gone)} orders answered that they do not exist (asked again with a fresh "
            f"ticket): {shown}; recorded in ops.gone_orders, not counted as failures, asked again "
            f"by the next runs until quarantined after {policy.gone_after_failures}"
        )
    if len(failed) > len(confirmed_gone):
        gone_ids = set(confirmed_gone)
        kinds = dict(Counter(f.kind for f in failed if f.order_id not in gone_ids))
        context.log.warning(
            f"{len(failed) - len(confirmed_gone)} orders could not be fetched ({kinds}); "
            "the next run retries them"
        )


def _main_reason(failed: list[FetchFailure]) -> str:
    """The most common failure message (kind when there is none), with how many orders share it."""
    reasons = Counter(failure.message.strip() or failure.kind for failure in failed)
    reason, count = reasons.most_common(1)[0]
    others = f" ({count} of them; {len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""
    return f"{reason}{others}"
