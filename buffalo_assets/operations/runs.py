"""Run bookkeeping: no run may keep a `buffalo_api` pool slot after it ended.

Two ways a slot leaks, both seen in operation:

- A run that ended (CANCELED by a terminate, FAILURE, even SUCCESS) while one of its steps
  held a slot, and whose step process never got to free it: a terminated run's step
  process is killed before its own cleanup. Dagster frees those only when
  `run_monitoring.free_slots_after_run_end_seconds` is set, and only for slots its
  daemon sees; we free them for every ended run, whatever the instance config says.
- A run killed hard (SIGKILL, OOM killer, a lost laptop lid) stays STARTED in Dagster's
  storage. Dagster's own run monitoring only covers run launchers with health checks
  (Docker, K8s); for runs executed on this host (the default launcher, `dagster asset
  materialize`, in-process runs) we check the run's process ids, taken from its own
  events, and mark the run failed and free its slots when those processes are gone.

Either way every later ingest would otherwise sit QUEUED ("blocked by global concurrency
limits") until someone freed the slot by hand.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

log = logging.getLogger(__name__)

ENDED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed step process whose parent died too may linger as a zombie until reaped.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in {"Z", "X"}


def _run_pids(instance: DagsterInstance, run_id: str) -> set[int]:
    records = instance.all_logs(run_id)
    return {r.dagster_event.pid for r in records if r.dagster_event and r.dagster_event.pid}


def slot_holding_run_ids(instance: DagsterInstance) -> set[str]:
    """Ids of the runs that hold a pool slot or wait in a pool's queue, in every pool."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    keys = sorted(storage.get_concurrency_keys())
    holders: set[str] = set(storage.get_concurrency_run_ids())
    for info in storage.get_concurrency_infos(keys).values():
        holders.update(slot.run_id for slot in info.claimed_slots)
        holders.update(step.run_id for step in info.pending_steps)
    return holders


def _free_slots(instance: DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def release_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark STARTED runs whose every process on this host is gone as failed; return their ids."""
    released: list[str] = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        pids = _run_pids(instance, run.run_id)
        if not pids or any(_process_alive(pid) for pid in pids):
            continue
        instance.report_run_failed(
            run, message=f"The run's process ({', '.join(map(str, sorted(pids)))}) is gone; released."
        )
        _free_slots(instance, run.run_id)
        log.warning("released run %s whose process died", run.run_id)
        released.append(run.run_id)
    return released


def release_ended_runs_slots(instance: DagsterInstance) -> list[str]:
    """Free the pool slots still held by runs that ended (or were deleted); return their ids."""
    released: list[str] = []
    for run_id in sorted(slot_holding_run_ids(instance)):
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status not in ENDED:
            continue
        _free_slots(instance, run_id)
        status = run.status.value if run is not None else "deleted"
        log.warning("freed the pool slots of run %s, which is %s", run_id, status)
        released.append(run_id)
    return released


def release_pool_slots(instance: DagsterInstance) -> list[str]:
    """Everything above: dead STARTED runs are failed, then every ended run's slots are freed."""
    dead = release_dead_runs(instance)
    ended = release_ended_runs_slots(instance)
    return sorted(set(dead) | set(ended))
