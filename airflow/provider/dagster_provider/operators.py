"""`DagsterAssetRunOperator`: materialize Dagster assets from Airflow and wait for the run.

In the style of the dbt Cloud and Airbyte provider operators: a Connection read by a hook,
templated fields, deferrable by default (the wait happens in the triggerer), the run id in
XCom (`dagster_run_id`) as soon as the run is launched, and `on_kill` terminating the run.

Reattach on retry: every run is tagged with the task instance that launched it
(`airflow/dag_id`, `airflow/run_id`, `airflow/task_id`, `airflow/try_number`,
`airflow/logical_date`). A later try of the same task instance (a retry after a killed
worker, a polling error, a timeout) first looks for a run of an earlier try and waits for
it instead of launching a second one while that run is still going (a run that succeeded
is reused only with `reuse_succeeded_run=True`, so a cleared task materializes again).

Dagster's own run retries: a run that fails and that Dagster will retry (tag
`dagster/will_retry`) is followed to the run retrying it (`dagster/auto_retry_run_id`), and
the task ends with the last run of that chain (`follow_run_retries=False` ends it with the
first failure).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

try:  # Airflow 3
    from airflow.sdk import BaseOperator, BaseOperatorLink
except ImportError:  # Airflow 2.10+
    from airflow.models import BaseOperator  # type: ignore[no-redef]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]

from dagster_provider.hooks import (
    DEFAULT_CONN_ID,
    ENDED,
    ENDED_FAILED,
    ENDED_STEP,
    WAIT_STEP,
    AirflowException,
    DagsterApiError,
    DagsterHook,
    RunState,
    after_end,
    no_retry_launched,
)
from dagster_provider.triggers import MAX_BACKOFF_S, DagsterRunTrigger

XCOM_RUN_ID = "dagster_run_id"
XCOM_RUN_URL = "dagster_run_url"


class DagsterRunLink(BaseOperatorLink):  # type: ignore[misc,valid-type]
    """The task's "Dagster run" button: the run's page in the Dagster UI."""

    name = "Dagster run"
    # Airflow 3 reads a link's URL from XCom under this key: the run's URL, pushed as soon as
    # the run is launched, so the link works while the task waits (Airflow 2 asks get_link).
    xcom_key = XCOM_RUN_URL

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if hasattr(ti_key, "xcom_pull"):  # Airflow 3: the task runner asks with the running task
            url = ti_key.xcom_pull(task_ids=ti_key.task_id, key=XCOM_RUN_URL)
        else:  # Airflow 2: the webserver asks with the task instance's key
            from airflow.models import XCom

            url = XCom.get_value(ti_key=ti_key, key=XCOM_RUN_URL)
        return str(url) if url else ""


class DagsterRunFailed(AirflowException):  # type: ignore[misc,valid-type]
    """The Dagster run ended in failure or was canceled."""


def task_instance_tags(context: Mapping[str, Any]) -> dict[str, str]:
    """The tags naming the task instance (and try) a Dagster run was launched for."""
    ti = context["ti"]
    logical_date = context.get("logical_date")
    return {
        "airflow/dag_id": str(ti.dag_id),
        "airflow/run_id": str(ti.run_id),
        "airflow/task_id": str(ti.task_id),
        "airflow/try_number": str(ti.try_number),
        "airflow/logical_date": logical_date.isoformat() if logical_date else "",
    }


class DagsterAssetRunOperator(BaseOperator):
    """Materialize `asset_selection` in Dagster and wait for the run to end.

    :param asset_selection: asset keys to materialize, path parts joined by "/" (templated).
    :param run_config: Dagster run config, e.g. ``{"ops": {"ingest": {"config":
        {"full_refresh": True}}}}`` (templated).
    :param tags: extra Dagster run tags (templated); the `airflow/*` tags always win.
    :param dagster_conn_id: the Airflow Connection of the Dagster webserver.
    :param location: Dagster code location (default: the connection's, `buffalo_assets`).
    :param repository: repository in that location (default: asked from Dagster).
    :param deferrable: wait in the triggerer (True, default) or in the worker.
    :param poll_interval: seconds between status polls.
    :param poll_error_budget: seconds Dagster may be unreachable while waiting before the
        try fails (the retry reattaches to the same run).
    :param reattach: look for a run launched by an earlier try first (True, default) and
        wait for it while it is still going.
    :param reuse_succeeded_run: also take an earlier try's run that already succeeded as
        this try's result (False, default: a cleared task materializes again).
    :param follow_run_retries: when Dagster's run retries retry a failed run, wait for the
        retry instead of failing (True, default).
    :param retry_wait: seconds to wait for Dagster to launch a retry it announced.
    """

    template_fields: Sequence[str] = ("asset_selection", "run_config", "tags")
    operator_extra_links = (DagsterRunLink(),)
    template_fields_renderers = {"run_config": "json", "tags": "json"}
    ui_color = "#4F43DD"

    def __init__(
        self,
        *,
        asset_selection: Sequence[str],
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        dagster_conn_id: str = DEFAULT_CONN_ID,
        location: str | None = None,
        repository: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        poll_error_budget: float = 600.0,
        reattach: bool = True,
        reuse_succeeded_run: bool = False,
        follow_run_retries: bool = True,
        retry_wait: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_selection = list(asset_selection)
        self.run_config = dict(run_config or {})
        self.tags = dict(tags or {})
        self.dagster_conn_id = dagster_conn_id
        self.location = location
        self.repository = repository
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.poll_error_budget = poll_error_budget
        self.reattach = reattach
        self.reuse_succeeded_run = reuse_succeeded_run
        self.follow_run_retries = follow_run_retries
        self.retry_wait = retry_wait
        self._run_id: str | None = None

    @property
    def hook(self) -> DagsterHook:
        return DagsterHook(self.dagster_conn_id)

    def execute(self, context: Any) -> str:
        hook = self.hook
        identity = task_instance_tags(context)
        run = self._earlier_run(hook, identity) if self.reattach else None
        if run is not None:
            run_id, status = run["runId"], run["status"]
            self.log.info(
                "Reattaching to Dagster run %s (%s), launched by try %s of this task instance: %s",
                run_id, status, run["tags"].get("airflow/try_number"), hook.settings.run_url(run_id),
            )  # fmt: skip
        else:
            tags = {**{str(k): str(v) for k, v in self.tags.items()}, **identity}
            run_id = hook.launch_run(
                self.asset_selection,
                tags=tags,
                run_config=self.run_config,
                location=self.location,
                repository=self.repository,
            )
            status = "QUEUED"
            self.log.info(
                "Dagster run %s materializes %s: %s",
                run_id,
                self.asset_selection,
                hook.settings.run_url(run_id),
            )
        # Pushed before waiting, so a killed or deferred try still shows which run it owns,
        # and the "Dagster run" link leads to it while the task waits.
        self._own(context, hook, run_id)
        # A failed run is waited for only when it is one Dagster retries (reattached to above).
        wait = status not in ENDED or (status == "FAILURE" and self.follow_run_retries)
        if wait and self.deferrable:
            self.defer(
                trigger=DagsterRunTrigger(
                    run_id=run_id,
                    dagster_conn_id=self.dagster_conn_id,
                    poll_interval=self.poll_interval,
                    error_budget=self.poll_error_budget,
                    follow_retries=self.follow_run_retries,
                    retry_wait=self.retry_wait,
                ),
                method_name="execute_complete",
            )
        message = ""
        if wait:
            run_id, status, message = self._wait(hook, run_id, context)
        return self._finish(hook, run_id, status, message)

    def _own(self, context: Any, hook: DagsterHook, run_id: str) -> None:
        """Say which Dagster run this try waits for (XCom, the "Dagster run" link)."""
        self._run_id = run_id
        context["ti"].xcom_push(key=XCOM_RUN_ID, value=run_id)
        context["ti"].xcom_push(key=XCOM_RUN_URL, value=hook.settings.run_url(run_id))

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> str:
        run_id = str(event["run_id"])
        hook = self.hook
        if context["ti"].xcom_pull(task_ids=context["ti"].task_id, key=XCOM_RUN_ID) != run_id:
            self._own(context, hook, run_id)  # a retry of it the trigger followed
        if event["status"] == "error":
            raise AirflowException(
                f"Lost track of Dagster run {run_id}: {event['message']}. The run was not stopped; "
                "a retry of this task reattaches to it."
            )
        return self._finish(hook, run_id, str(event["status"]), str(event.get("message") or ""))

    def _earlier_run(self, hook: DagsterHook, identity: Mapping[str, str]) -> dict[str, Any] | None:
        same_instance = {k: identity[k] for k in ("airflow/dag_id", "airflow/run_id", "airflow/task_id")}
        runs = hook.find_runs(same_instance)
        if not runs:
            return None
        newest = RunState(runs[0]["runId"], runs[0]["status"], runs[0]["tags"])
        # A failure Dagster retries (or has retried) is still this task's run: the wait
        # follows it to the retry rather than launching one more beside Dagster's.
        retried = after_end(newest, follow_retries=self.follow_run_retries, confirmed=True) != ENDED_STEP
        if newest.status in ENDED_FAILED and retried:
            return runs[0]
        if newest.status in ENDED_FAILED:
            return None
        if runs[0]["status"] == "SUCCESS" and not self.reuse_succeeded_run:
            self.log.info(
                "Dagster run %s of an earlier try already succeeded; launching a new one "
                "(reuse_succeeded_run=True would take it as this try's result)",
                runs[0]["runId"],
            )
            return None
        return runs[0]

    def _wait(self, hook: DagsterHook, run_id: str, context: Any = None) -> tuple[str, str, str]:
        """Poll until the run (or the retries Dagster made of it) ended: (run id, status, message)."""
        last: str | None = None
        failing_since: float | None = None
        retry_since: float | None = None
        attempt = 0
        while True:
            try:
                state = hook.run_state(run_id)
            except (httpx.HTTPError, DagsterApiError, OSError) as error:
                now = time.monotonic()
                failing_since = failing_since or now
                attempt += 1
                if now - failing_since > self.poll_error_budget:
                    raise AirflowException(
                        f"Lost track of Dagster run {run_id} for {now - failing_since:.0f} s ({error}). "
                        "The run was not stopped; a retry of this task reattaches to it."
                    ) from error
                self.log.warning("polling Dagster run %s failed (%s); retrying", run_id, error)
                time.sleep(min(self.poll_interval * 2**attempt, MAX_BACKOFF_S))
                continue
            failing_since, attempt = None, 0
            if state.status != last:
                self.log.info("Dagster run %s is %s", run_id, state.status)
                last = state.status
            if state.status in ENDED:
                confirmed = retry_since is not None
                step = after_end(state, follow_retries=self.follow_run_retries, confirmed=confirmed)
                if step == ENDED_STEP:
                    return run_id, state.status, ""
                if step != WAIT_STEP:
                    self.log.info("Dagster retries run %s as run %s; following it", run_id, step)
                    run_id, last, retry_since = step, None, None
                    if context is not None:
                        self._own(context, hook, run_id)  # XCom and the link: the run now waited for
                    self._run_id = run_id
                    continue
                now = time.monotonic()
                retry_since = retry_since or now
                if now - retry_since > self.retry_wait:
                    return run_id, state.status, no_retry_launched(self.retry_wait)
                time.sleep(min(self.poll_interval, 2.0))
                continue
            time.sleep(self.poll_interval)

    def _finish(self, hook: DagsterHook, run_id: str, status: str, message: str = "") -> str:
        if status != "SUCCESS":
            messages = [message] if message else []
            messages += hook.failure_messages(run_id)
            raise DagsterRunFailed(
                f"Dagster run {run_id} ended {status}: {' | '.join(messages) or 'no error message'} "
                f"(see {hook.settings.run_url(run_id)})"
            )
        self.log.info("Dagster run %s succeeded", run_id)
        return run_id

    def on_kill(self) -> None:
        if not self._run_id:
            return
        hook = self.hook
        try:
            # The run waited for, or the retry Dagster launched (or is about to) for it.
            run_id = hook.run_to_stop(self._run_id)
            if run_id is None:
                return
            self.log.info("Terminating Dagster run %s", run_id)
            hook.terminate(run_id)
        except (httpx.HTTPError, DagsterApiError, OSError) as error:
            self.log.error("Could not terminate Dagster run %s: %s", self._run_id, error)
