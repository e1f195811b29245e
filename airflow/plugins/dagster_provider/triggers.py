"""`DagsterRunTrigger`: waits for a Dagster run in Airflow's triggerer, no worker slot held.

It polls the run's status asynchronously and fires one event when the run ended, or when
Dagster could not be asked for longer than `error_budget` seconds (an error event: the
operator fails that try, and the retry reattaches to the same, still running, Dagster
run). A user's mark-failed or clear of the deferred task terminates the run (`on_kill`,
Airflow 3.1+).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dagster_provider.hooks import ENDED, DagsterApiError, DagsterHook, DagsterRunNotFound

MAX_BACKOFF_S = 60.0


class DagsterRunTrigger(BaseTrigger):
    """Fire {"status": SUCCESS|FAILURE|CANCELED|error, "run_id", "message"} when the run ended."""

    def __init__(
        self,
        run_id: str,
        dagster_conn_id: str,
        poll_interval: float = 5.0,
        error_budget: float = 600.0,
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.dagster_conn_id = dagster_conn_id
        self.poll_interval = poll_interval
        self.error_budget = error_budget

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "dagster_conn_id": self.dagster_conn_id,
                "poll_interval": self.poll_interval,
                "error_budget": self.error_budget,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DagsterHook(self.dagster_conn_id)
        last: str | None = None
        failing_since: float | None = None
        attempt = 0
        while True:
            try:
                status = await hook.arun_status(self.run_id)
            except DagsterRunNotFound as error:
                yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": str(error)})
                return
            except (httpx.HTTPError, DagsterApiError, OSError) as error:
                # Dagster restarting or a network blip: keep watching, with backoff.
                now = time.monotonic()
                failing_since = failing_since or now
                attempt += 1
                if now - failing_since > self.error_budget:
                    message = (
                        f"could not ask Dagster about run {self.run_id} for {now - failing_since:.0f} s "
                        f"({type(error).__name__}: {error})"
                    )
                    yield TriggerEvent({"status": "error", "run_id": self.run_id, "message": message})
                    return
                self.log.warning("polling Dagster run %s failed (%s); retrying", self.run_id, error)
                await asyncio.sleep(min(self.poll_interval * 2**attempt, MAX_BACKOFF_S))
                continue
            failing_since, attempt = None, 0
            if status != last:
                self.log.info("Dagster run %s is %s", self.run_id, status)
                last = status
            if status in ENDED:
                yield TriggerEvent({"status": status, "run_id": self.run_id, "message": ""})
                return
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        hook = DagsterHook(self.dagster_conn_id)
        if await hook.arun_status(self.run_id) in ENDED:
            return
        self.log.info("Terminating Dagster run %s (the task was stopped)", self.run_id)
        await hook.aterminate(self.run_id)
