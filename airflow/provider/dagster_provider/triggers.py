"""`DagsterRunTrigger`: waits for a Dagster run in Airflow's triggerer, no worker slot held.

It polls the run's status asynchronously and fires one event when the run ended, or when
Dagster could not be asked for longer than `error_budget` seconds (an error event: the
operator fails that try, and the retry reattaches to the same, still running, Dagster
run). A user's mark-failed or clear of the deferred task terminates the run, or the retry
Dagster launched for it (`on_kill`: on Airflow 3.3, the version tested; the triggerers of
Airflow 3.0-3.2 and 2.x do not call it, see docs/airflow.md).

A run that fails and that Dagster's run retries (`run_retries` in dagster.yaml) will retry
is not the end: the trigger follows the retry (tag `dagster/auto_retry_run_id`) and reports
the last run of the chain, waiting at most `retry_wait` seconds for Dagster to launch it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dagster_provider.hooks import (
    ENDED,
    ENDED_STEP,
    WAIT_STEP,
    DagsterApiError,
    DagsterHook,
    DagsterRunNotFound,
    after_end,
    no_retry_launched,
)

MAX_BACKOFF_S = 60.0


class DagsterRunTrigger(BaseTrigger):
    """Fire {"status": SUCCESS|FAILURE|CANCELED|error, "run_id", "message"} when the run ended."""

    def __init__(
        self,
        run_id: str,
        dagster_conn_id: str,
        poll_interval: float = 5.0,
        error_budget: float = 600.0,
        follow_retries: bool = True,
        retry_wait: float = 300.0,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.dagster_conn_id = dagster_conn_id
        self.poll_interval = poll_interval
        self.error_budget = error_budget
        self.follow_retries = follow_retries
        self.retry_wait = retry_wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "dagster_conn_id": self.dagster_conn_id,
                "poll_interval": self.poll_interval,
                "error_budget": self.error_budget,
                "follow_retries": self.follow_retries,
                "retry_wait": self.retry_wait,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DagsterHook(self.dagster_conn_id)
        run_id = self._following = self.run_id
        last: str | None = None
        failing_since: float | None = None
        retry_since: float | None = None
        attempt = 0
        while True:
            try:
                state = await hook.arun_state(run_id)
            except DagsterRunNotFound as error:
                yield TriggerEvent({"status": "error", "run_id": run_id, "message": str(error)})
                return
            except (httpx.HTTPError, DagsterApiError, OSError) as error:
                # Dagster restarting or a network blip: keep watching, with backoff.
                now = time.monotonic()
                failing_since = failing_since or now
                attempt += 1
                if now - failing_since > self.error_budget:
                    message = (
                        f"could not ask Dagster about run {run_id} for {now - failing_since:.0f} s "
                        f"({type(error).__name__}: {error})"
                    )
                    yield TriggerEvent({"status": "error", "run_id": run_id, "message": message})
                    return
                self.log.warning("polling Dagster run %s failed (%s); retrying", run_id, error)
                await asyncio.sleep(min(self.poll_interval * 2**attempt, MAX_BACKOFF_S))
                continue
            failing_since, attempt = None, 0
            if state.status != last:
                self.log.info("Dagster run %s is %s", run_id, state.status)
                last = state.status
            if state.status in ENDED:
                step = after_end(state, follow_retries=self.follow_retries, confirmed=retry_since is not None)
                if step == ENDED_STEP:
                    yield TriggerEvent({"status": state.status, "run_id": run_id, "message": ""})
                    return
                if step != WAIT_STEP:
                    self.log.info("Dagster retries run %s as run %s; following it", run_id, step)
                    run_id, last, retry_since = step, None, None
                    self._following = run_id
                    continue
                now = time.monotonic()
                retry_since = retry_since or now
                if now - retry_since > self.retry_wait:
                    message = no_retry_launched(self.retry_wait)
                    yield TriggerEvent({"status": "FAILURE", "run_id": run_id, "message": message})
                    return
                await asyncio.sleep(min(self.poll_interval, 2.0))
                continue
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        hook = DagsterHook(self.dagster_conn_id)
        # The run being followed, or the retry Dagster launched (or is about to) for it.
        run_id = await hook.arun_to_stop(getattr(self, "_following", self.run_id))
        if run_id is None:
            return
        self.log.info("Terminating Dagster run %s (the task was stopped)", run_id)
        await hook.aterminate(run_id)
