"""Ingestion: `order_ids` (every id the account can see) and `raw_orders` (versioned details).

Both talk to the Buffalo API, so both run in the `buffalo_api` concurrency pool: two runs
never hit the API at once. They do the API work in their own body and return what to
store; the Postgres IO manager writes it.
"""

import functools
import inspect
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetObservation,
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
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
from buffalo_assets.storage.io_manager import FrameSpill
from buffalo_assets.storage.resource import PostgresResource

OWNERS = ["team:data-platform"]
API_POOL = "buffalo_api"
CHUNK_ORDERS = 500
PROGRESS_EVERY_S = 10.0
# Deployment settings give the defaults; run config can still override per run.
DEFAULTS = settings.load()
FRESH_WITHIN = timedelta(hours=DEFAULTS.freshness_hours)
ORDER_IDS_RETRIES = 2
RAW_ORDERS_RETRIES = 1
# Failure kinds that a retry a few seconds later cannot fix: the server answered, and the
# answer was "no such order" (detail_error), too large, or not storable.
PERMANENT_FAILURE_KINDS = frozenset({"detail_error", "too_large", "unstorable_payload"})


class OrderIdsConfig(Config):
    full_walk: bool = Field(
        default=False, description="Walk the whole order list even if a full walk ran recently"
    )
    full_walk_every_hours: float = Field(
        default=DEFAULTS.full_walk_hours,
        description="Hours between full walks; in between, listing stops at the first known page",
    )


class RawOrdersConfig(Config):
    full_refresh: bool = Field(default=False, description="Fetch every known order, including delivered ones")
    max_failure_share: float = Field(
        default=DEFAULTS.max_failure_share,
        description="Fail the run when more than this share of the orders could not be fetched",
    )
    gone_after_failures: int = Field(
        default=DEFAULTS.gone_after_failures,
        ge=1,
        description="Quarantine an order whose detail failed for good in this many runs in a row",
    )
    gone_recheck_days: float = Field(
        default=DEFAULTS.gone_recheck_days,
        ge=0,
        description="Days between re-checks of a quarantined gone order",
    )
    reverify_share: float = Field(
        default=DEFAULTS.reverify_share,
        ge=0,
        le=1,
        description="Share of final orders fetched again, least recently verified first",
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


# Tickets this process got, by account (base URL, username, password digest), and when: the
# run's second step uses the ticket of the first one's login instead of logging in again
# (a key fetch, a login and an RSA encryption: ~0.12 s at 50 ms of latency). A ticket the
# service no longer accepts is replaced by a fresh login, as an expired one always was; one
# older than TICKET_REUSE_S is not used.
_tickets: dict[tuple[str, str, str], tuple[float, str]] = {}
TICKET_REUSE_S = 600.0


def _remember_ticket(client: BuffaloClient) -> None:
    """Keep the client's ticket for the next step, timed from the login that got it."""
    if client.ticket is not None and _tickets.get(client.account, (0.0, None))[1] != client.ticket:
        _tickets[client.account] = (time.monotonic(), client.ticket)


def _logged_in(buffalo: BuffaloResource, context: AssetExecutionContext, max_retries: int) -> BuffaloClient:
    client = buffalo.get_client()
    obtained, ticket = _tickets.get(client.account, (0.0, None))
    if ticket is not None and time.monotonic() - obtained < TICKET_REUSE_S:
        client.use_ticket(ticket)
        return client
    try:
        client.login()
    except BuffaloAuthError as exc:
        client.close()
        # Retrying cannot fix wrong credentials; fail now with the service's reason.
        raise Failure(description=f"Buffalo login failed: {exc}", allow_retries=False) from None
    except BuffaloApiError as exc:
        client.close()
        raise Failure(
            description=f"Buffalo API unavailable: {exc}", allow_retries=_retry_allowed(context, max_retries)
        ) from None
    _remember_ticket(client)
    return client


def _now() -> datetime:
    return datetime.now(UTC)


@asset(
    group_name="ingestion",
    owners=OWNERS,
    kinds={"python", "postgres"},
    pool=API_POOL,
    io_manager_key="postgres_io",
    retry_policy=RetryPolicy(max_retries=ORDER_IDS_RETRIES, delay=10, backoff=Backoff.EXPONENTIAL),
    metadata={
        "dagster/table_name": "raw.order_ids",
        "write_mode": "upsert",
        "primary_key": ["order_id"],
        "update_columns": ["last_seen_at"],
    },
)
@_ends_on_interrupt
def order_ids(
    context: AssetExecutionContext,
    config: OrderIdsConfig,
    buffalo: BuffaloResource,
    postgres: PostgresResource,
) -> pd.DataFrame:
    """Every order id Solo's Buffalo account can see, with when it was first and last seen.

    Table `raw.order_ids`. Between full walks of the order list (by default once a day),
    listing stops at the first page whose ids are all known already, because new orders
    arrive at the top of the list.
    """
    engine = postgres.get_engine()
    known = raw_store.known_order_ids(engine)
    now = _now()
    full = config.full_walk or raw_store.full_walk_due(
        engine, now, timedelta(hours=config.full_walk_every_hours)
    )
    seen: list[str] = []
    pages = 0
    with _logged_in(buffalo, context, ORDER_IDS_RETRIES) as client:
        try:
            for page in client.iter_order_pages(parallel=full):
                pages += 1
                seen.extend(page.order_ids)
                if not full and page.order_ids and known.issuperset(page.order_ids):
                    break
        except BuffaloAuthError as exc:
            raise Failure(description=f"Buffalo login failed: {exc}", allow_retries=False) from None
        except BuffaloApiError as exc:
            raise Failure(
                description=f"Buffalo order list unavailable: {exc}",
                allow_retries=_retry_allowed(context, ORDER_IDS_RETRIES),
            ) from None
        stats = client.stats.as_dict()
        _remember_ticket(client)  # a fresh login during the walk replaced the ticket
    new = [order_id for order_id in seen if order_id not in known]
    raw_store.record_list_walk(
        engine,
        run_id=context.run_id,
        walked_at=now,
        full_walk=full,
        pages=pages,
        ids_seen=len(seen),
        new_ids=len(new),
    )
    context.add_output_metadata(
        {
            "total": MetadataValue.int(len(known) + len(new)),
            "new_since_last_run": MetadataValue.int(len(new)),
            "ids_listed": MetadataValue.int(len(seen)),
            "pages": MetadataValue.int(pages),
            "full_walk": MetadataValue.bool(full),
            "requests": MetadataValue.int(stats["requests"]),
            "retries": MetadataValue.int(stats["retries"]),
        }
    )
    return pd.DataFrame({"order_id": seen, "first_seen_at": now, "last_seen_at": now})


class _Progress:
    """Logs how the fetch is going every PROGRESS_EVERY_S seconds: fetched, failed, orders/s."""

    def __init__(self, context: AssetExecutionContext, wanted: int) -> None:
        self.context, self.wanted = context, wanted
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
            f"fetched {self.fetched} of {self.wanted} orders, {self.failed} failed, {rate:.0f} orders/s"
        )


@asset(
    deps=[order_ids],
    freshness_policy=FreshnessPolicy.time_window(fail_window=FRESH_WITHIN),
    group_name="ingestion",
    owners=OWNERS,
    kinds={"python", "postgres"},
    pool=API_POOL,
    io_manager_key="postgres_io",
    retry_policy=RetryPolicy(max_retries=RAW_ORDERS_RETRIES, delay=30),
    metadata={
        "dagster/table_name": "raw.order_versions",
        "write_mode": "upsert",
        "primary_key": ["order_id", "payload_sha256"],
        "update_columns": ["last_fetched_at"],
        "write_counts_as": {"inserted": "new_versions", "updated": "unchanged"},
    },
)
@_ends_on_interrupt
def raw_orders(
    context: AssetExecutionContext,
    config: RawOrdersConfig,
    buffalo: BuffaloResource,
    postgres: PostgresResource,
) -> Iterator[Output | AssetObservation]:
    """Each order's detail exactly as Buffalo sent it, kept as append-only versions.

    Table `raw.order_versions` (view `raw.orders`: the latest version of each order;
    `raw.order_observations`: the sequence of payloads each order showed). Fetches orders
    never fetched and orders not yet delivered, returned, cancelled or lost (`full_refresh`
    fetches all), plus a rolling share of the final ones, least recently verified first
    (`reverify_share`), so a status Buffalo changes later is caught. An unchanged payload
    only moves `last_fetched_at`; a changed one adds a version. Orders that could not be
    fetched are listed in `ops.fetch_errors` and fetched again by the next run, except
    those gone for good `gone_after_failures` runs in a row: quarantined in
    `ops.gone_orders`, re-checked every `gone_recheck_days`, and no longer counted in the
    failure share. A payload that cannot be stored canonically (1e400, NUL) is kept, raw
    bytes and all, in `ops.unstorable_payloads`, and tried again when it changes.

    The details are fetched here (progress in the step's log) and spilled to a temporary
    file chunk by chunk, so memory stays flat; the IO manager then upserts the chunks.
    Only after that does the asset record observations and quarantines and judge the
    failures, so a run that fails for too many of them still keeps what it fetched.
    """
    engine = postgres.get_engine()
    run_started = _now()
    plan = raw_store.plan_fetch(
        engine,
        full_refresh=config.full_refresh,
        now=run_started,
        reverify_share=config.reverify_share,
        recheck_every=timedelta(days=config.gone_recheck_days),
    )
    wanted = plan.order_ids
    client = _logged_in(buffalo, context, RAW_ORDERS_RETRIES)
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = _Progress(context, len(wanted))
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
            frame, unstorable = raw_store.version_frame(fetched, context.run_id, _now())
            raw_store.record_fetch_errors(engine, failures, context.run_id)
            unstorable_new += raw_store.record_unstorable(engine, unstorable, context.run_id, _now())
            unstorable_seen += len(unstorable)
            answered.update(order.order_id for order in fetched if order.order_id in plan.gone_known)
            stored_unstorable.update(plan.unstorable_known.intersection(frame["order_id"]))
            if plan.reverify:
                reverified_changed += sum(
                    1
                    for order_id, sha in zip(frame["order_id"], frame["payload_sha256"], strict=True)
                    if order_id in plan.reverify and sha != plan.reverify[order_id]
                )
            failed.extend(failures)
            spill.append(frame)
            seen.append(frame[["order_id", "payload_sha256", "last_fetched_at"]])
            fetched.clear()
            failures.clear()

        try:
            for result in client.fetch_details(wanted):
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
        finally:
            client.close()
        flush()
        fetch_s = time.perf_counter() - started
        progress.log(time.perf_counter())
        stats = client.stats.as_dict()
        _remember_ticket(client)
        # Re-checks of quarantined gone orders do not count; a payload first quarantined now does.
        counted = [failure for failure in failed if failure.order_id not in plan.recheck]
        share = (len(counted) + unstorable_new) / plan.counted if plan.counted else 0.0
        gone = raw_store.record_gone(
            engine,
            failed,
            answered,
            run_id=context.run_id,
            now=run_started,
            limit=config.gone_after_failures,
        )
        raw_store.release_unstorable(engine, stored_unstorable)
        metadata = {
            "orders_wanted": MetadataValue.int(len(wanted)),
            "fetched": MetadataValue.int(spill.rows),
            "failed": MetadataValue.int(len(failed)),
            "failure_kinds": MetadataValue.json(dict(Counter(failure.kind for failure in failed))),
            "failure_share": MetadataValue.float(round(share, 4)),
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
            "requests": MetadataValue.int(stats["requests"]),
            "retries": MetadataValue.int(stats["retries"]),
            "relogins": MetadataValue.int(stats["relogins"]),
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
        # Dagster hands a yielded output to the IO manager before this generator resumes.
        yield Output(spill.read_back(), metadata=metadata)
        # The versions are stored: now the sequence of what each order showed.
        observed = raw_store.record_observations(engine, seen.read_back(), context.run_id)
    yield AssetObservation(
        asset_key=context.asset_key, metadata={"observations": MetadataValue.int(len(observed))}
    )
    if refused is not None:
        raise Failure(description=f"Buffalo login failed: {refused}", allow_retries=False)
    if share > config.max_failure_share:
        # The run's top-level error in the UI is this step's failure: it must say why (see
        # _retry_allowed). A failure no retry can fix is not retried at all, nor is one that
        # only payloads now in quarantine pushed over the limit.
        permanent = all(failure.kind in PERMANENT_FAILURE_KINDS for failure in counted) or (
            len(counted) / plan.counted <= config.max_failure_share
        )
        unstorable_note = (
            f" ({unstorable_new} of them fetched but not storable, see ops.unstorable_payloads)"
            if unstorable_new
            else ""
        )
        reason = _main_reason(counted) if counted else "payloads that cannot be stored"
        raise Failure(
            description=(
                f"{len(counted) + unstorable_new} of {plan.counted} orders ({share:.0%}) could not be "
                f"fetched: {reason}{unstorable_note}; more than the allowed "
                f"{config.max_failure_share:.0%}, so the run failed. The {spill.rows} fetched were "
                "stored; see ops.fetch_errors for the rest"
            ),
            metadata=metadata,
            allow_retries=not permanent and _retry_allowed(context, RAW_ORDERS_RETRIES),
        )
    if failed:
        kinds = dict(Counter(failure.kind for failure in failed))
        context.log.warning(f"{len(failed)} orders could not be fetched ({kinds}); the next run retries them")


def _main_reason(failed: list[FetchFailure]) -> str:
    """The most common failure message (kind when there is none), with how many orders share it."""
    reasons = Counter(failure.message.strip() or failure.kind for failure in failed)
    reason, count = reasons.most_common(1)[0]
    others = f" ({count} of them; {len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""
    return f"{reason}{others}"
