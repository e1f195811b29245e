"""Run bookkeeping: releasing runs whose process died without saying so.

A run killed hard (SIGKILL, OOM killer, a lost laptop lid) stays STARTED in Dagster's
storage and keeps its `buffalo_api` pool slot, so every later ingest would wait forever.
Dagster's own run monitoring only covers run launchers with health checks (Docker, K8s);
for runs executed on this host (the default launcher, `dagster asset materialize`,
in-process runs) we check the run's process id, taken from its own events, and mark
the run failed and free its slots when that process is gone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

log = logging.getLogger(__name__)


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
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning("released run %s whose process died", run.run_id)
        released.append(run.run_id)
    return released
