"""No order lost, no run corrupting data, no secret leaking: under faults, crashes and load.

Every comparison is of table contents ({order id: payload hash}), not of counts.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from hypothesis import example, given, settings
from hypothesis import strategies as st

from buffalo_assets.buffalo.client import normalize_order_id, parse_order_page, unwrap_detail
from buffalo_assets.operations.runs import release_dead_runs
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.faults import FaultPlan
from buffalo_assets.sandbox.server import RunningSandbox
from buffalo_assets.storage.bulk import in_transaction, write_frame
from buffalo_assets.storage.raw_store import canonical_json, payload_sha256
from buffalo_assets.storage.tables import order_versions
from tests.conftest import ROOT, SandboxFactory
from tests.pipeline import MATERIALIZE, metadata_of, run, subprocess_env


def expected_store(running: RunningSandbox) -> dict[str, str]:
    """What an undisturbed ingest stores: every visible order's current payload hash."""
    sandbox = running.sandbox
    return {
        str(sandbox.book.order_id(i)): payload_sha256(canonical_json(sandbox.book.detail(i, sandbox.now)))
        for i in range(sandbox.visible_count())
        if not sandbox.book.is_missing(i)
    }


def stored(engine: sa.Engine) -> dict[str, str]:
    """{order id: payload hash} of raw.order_versions; fails on any order stored twice."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT order_id, payload_sha256 FROM raw.order_versions")).all()
    found = dict(rows)
    assert len(found) == len(rows), "an order has two versions although nothing changed"
    return found


# -- 1. fault matrix ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.10, 0.30])
def test_every_fault_kind_at_once_loses_no_order_within_two_runs(
    rate: float, start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(
        orders=300,
        faults=FaultPlan.mixed(
            rate, retry_after_s=0.05, slow_ms=1500, ticket_ttl_s=2, detail_envelope="mixed"
        ),
    )
    first = run(running, pg_url, instance, max_attempts=3)
    assert first.success
    missing_after_first = set(expected_store(running)) - set(stored(empty_store))
    with empty_store.connect() as connection:
        explained = set(
            connection.execute(
                sa.text("SELECT order_id FROM ops.fetch_errors WHERE run_id = :r"), {"r": first.run_id}
            ).scalars()
        )
    assert missing_after_first == explained  # every failure of the run is in ops.fetch_errors
    assert metadata_of(first, "raw_orders")["failed"] == len(explained)
    assert run(running, pg_url, instance, max_attempts=8).success
    assert stored(empty_store) == expected_store(running)


# -- 2. crash and resume --------------------------------------------------------------------


def test_sigkill_at_five_seeded_points_then_a_rerun_converges_to_the_undisturbed_state(
    start_sandbox: SandboxFactory,
    pg_url: str,
    dagster_home: Path,
    instance: DagsterInstance,
    empty_store: sa.Engine,
) -> None:
    running = start_sandbox(orders=600, faults=FaultPlan(latency_ms=15))
    expected = expected_store(running)
    env = subprocess_env(running, pg_url, dagster_home, BUFFALO_CONCURRENCY="4")
    rng = random.Random(20261129)
    # A point is "after N versions were stored"; None kills during start-up and listing.
    points = [None, *sorted(rng.sample(range(1, 600), 4))]
    for point in points:
        with empty_store.begin() as connection:
            connection.execute(sa.text("TRUNCATE raw.order_ids, raw.order_versions, ops.fetch_errors"))
        process = subprocess.Popen(
            MATERIALIZE, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        if point is None:
            time.sleep(rng.uniform(1.0, 3.0))
        else:
            deadline = time.monotonic() + 120
            while len(stored(empty_store)) < point and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        release_dead_runs(instance)
        rerun = subprocess.run(MATERIALIZE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, (point, rerun.stderr[-3000:])
        assert stored(empty_store) == expected, f"kill point {point}"


def test_database_connections_killed_mid_batch_leave_no_partial_batch(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=1_500, faults=FaultPlan(latency_ms=10))
    expected = expected_store(running)
    outcome: dict[str, bool] = {}
    worker = threading.Thread(target=lambda: outcome.update(ok=run(running, pg_url, instance).success))
    worker.start()
    killed = 0
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        while worker.is_alive() and killed < 3:
            if len(stored(empty_store)) >= 300 * (killed + 1):
                killed += connection.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = 'buffalo_assets' "
                        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
                        "AND (query ILIKE '%_incoming%' OR query ILIKE '%order_versions%')"
                    )
                ).scalar_one()
            time.sleep(0.005)
    worker.join(timeout=300)
    admin.dispose()
    assert killed >= 1, "no write was caught in flight"
    # The run redoes a batch whose connection died; if it failed anyway, the next run converges.
    if not outcome.get("ok"):
        assert run(running, pg_url, instance).success
    assert stored(empty_store) == expected


# -- 3. concurrency -----------------------------------------------------------------------


def test_two_writers_upserting_overlapping_batches_lose_and_duplicate_nothing(empty_store: sa.Engine) -> None:
    import pandas as pd

    now = datetime.now(UTC)
    versions = [(f"9{n:05d}", f"sha-{n}-{v}") for n in range(2_000) for v in range(2)]
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(12):
                batch = rng.sample(versions, 600)
                frame = pd.DataFrame(
                    {
                        "order_id": [o for o, _ in batch],
                        "payload": ['{"id": 1}'] * len(batch),
                        "payload_sha256": [s for _, s in batch],
                        "first_fetched_at": now,
                        "last_fetched_at": now + timedelta(seconds=seed),
                        "run_id": f"writer-{seed}",
                    }
                )
                in_transaction(
                    empty_store,
                    lambda c, f=frame: write_frame(
                        c, order_versions, f, "upsert", ["order_id", "payload_sha256"], ["last_fetched_at"]
                    ),
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with empty_store.connect() as connection:
        rows = connection.execute(sa.text("SELECT order_id, payload_sha256 FROM raw.order_versions")).all()
    written = set()
    for seed in (1, 2):
        rng = random.Random(seed)
        for _ in range(12):
            written.update(rng.sample(versions, 600))
    assert len(rows) == len(set(rows)) == len(written)
    assert set(map(tuple, rows)) == written


# -- 4. hostile input -------------------------------------------------------------------------

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
page_like = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {"resultMap": st.dictionaries(st.sampled_from(["list", "recordTotal"]), json_value)}
        )
    }
)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(json_value, page_like))
@example(body={"data": {"resultMap": {"recordTotal": float("inf")}}})  # json.loads reads Infinity
@example(body={"data": {"resultMap": {"recordTotal": float("nan"), "list": [float("inf")]}}})
def test_api_response_parsers_accept_or_refuse_any_json_with_value_error(body: object) -> None:
    try:
        items, total = parse_order_page(body)
    except ValueError:
        pass
    else:
        assert isinstance(items, list) and (total is None or isinstance(total, int))
        for item in items:
            with contextlib.suppress(ValueError):
                assert normalize_order_id(item.get("id") if isinstance(item, dict) else item).strip()
    detail = unwrap_detail(body)
    assert detail is None or isinstance(detail, dict)


def test_a_response_over_the_5_mb_cap_is_refused_and_quarantined(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=20)
    SandboxControl(running.url).bloat("31000004", 6_000_000)
    assert run(running, pg_url, instance).success
    with empty_store.connect() as connection:
        failures = connection.execute(sa.text("SELECT order_id, kind, message FROM ops.fetch_errors")).all()
    assert [(f.order_id, f.kind) for f in failures] == [("31000004", "too_large")]
    assert "exceeds the 5242880-byte cap" in failures[0].message
    assert set(stored(empty_store)) == set(expected_store(running)) - {"31000004"}
