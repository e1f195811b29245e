"""An Airflow operator that materializes Dagster assets and waits for the run.

It posts `launchPipelineExecution` to the Dagster webserver's GraphQL API (the implicit
asset job `__ASSET_JOB` with an asset selection), tags the run with the Airflow dag id,
run id and task id, polls until the run ends, logs a link to the run in the Dagster UI,
and fails the task with Dagster's own error messages when the run fails or is canceled.
Only `requests` is needed, so it runs in Airflow's virtualenv without Dagster installed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import requests

try:  # Airflow 3
    from airflow.sdk import BaseOperator
except ImportError:  # Airflow 2.10+
    from airflow.models import BaseOperator

try:
    from airflow.exceptions import AirflowException
except ImportError:  # pragma: no cover - every supported Airflow has it
    AirflowException = RuntimeError  # type: ignore[misc,assignment]

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
  }
}
"""
STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on PythonError { message } }
}
"""
FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message }
        ... on RunCanceledEvent { message }
      }
    }
  }
}
"""
TERMINATE = """
mutation Terminate($runId: String!) { terminateRun(runId: $runId) { __typename } }
"""


class DagsterRunFailed(AirflowException):  # type: ignore[misc,valid-type]
    """The Dagster run ended in failure or was canceled."""


class MaterializeDagsterAssets(BaseOperator):
    """Materialize `asset_keys` in Dagster and wait for the run to end."""

    ui_color = "#4F43DD"

    def __init__(
        self,
        *,
        asset_keys: Sequence[str],
        location: str = "buffalo_assets",
        repository: str = "__repository__",
        dagster_url: str | None = None,
        poll_interval: float = 5.0,
        request_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_keys = list(asset_keys)
        self.location = location
        self.repository = repository
        self.dagster_url = dagster_url
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self._run_id: str | None = None

    @property
    def base_url(self) -> str:
        return (self.dagster_url or os.environ.get("DAGSTER_URL") or DEFAULT_DAGSTER_URL).rstrip("/")

    def _graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables},
            timeout=self.request_timeout,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AirflowException(f"Dagster GraphQL error: {body['errors'][0].get('message')}")
        return body["data"]

    def execute(self, context: Any) -> str:
        tags = {
            "airflow/dag_id": self.dag_id,
            "airflow/run_id": str(context.get("run_id", "")),
            "airflow/task_id": self.task_id,
        }
        params = {
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": self.repository,
                "pipelineName": "__ASSET_JOB",
                "assetSelection": [{"path": key.split("/")} for key in self.asset_keys],
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        launched = self._graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            detail = launched.get("message") or launched.get("errors") or launched["__typename"]
            raise AirflowException(f"Dagster refused to launch {self.asset_keys}: {detail}")
        self._run_id = run_id = launched["run"]["runId"]
        self.log.info(
            "Dagster run %s materializes %s: %s/runs/%s", run_id, self.asset_keys, self.base_url, run_id
        )
        status = self._wait(run_id)
        if status != "SUCCESS":
            messages = self._failure_messages(run_id)
            raise DagsterRunFailed(
                f"Dagster run {run_id} ended {status}: {' | '.join(messages) or 'no error message'} "
                f"(see {self.base_url}/runs/{run_id})"
            )
        self.log.info("Dagster run %s succeeded", run_id)
        return run_id

    def _wait(self, run_id: str) -> str:
        last = None
        while True:
            found = self._graphql(STATUS, {"runId": run_id})["runOrError"]
            if found["__typename"] != "Run":
                raise AirflowException(
                    f"Dagster lost run {run_id}: {found.get('message', found['__typename'])}"
                )
            status = found["status"]
            if status != last:
                self.log.info("Dagster run %s is %s", run_id, status)
                last = status
            if status in TERMINAL:
                return status
            time.sleep(self.poll_interval)

    def _failure_messages(self, run_id: str) -> list[str]:
        logs = self._graphql(FAILURES, {"runId": run_id})["logsForRun"]
        messages = []
        for event in logs.get("events", []):
            if event["__typename"] == "ExecutionStepFailureEvent":
                messages.append(f"{event['stepKey']}: {event['error']['message'].strip()}")
            elif event.get("message") and event["__typename"] in ("RunFailureEvent", "RunCanceledEvent"):
                messages.append(event["message"])
        return messages

    def on_kill(self) -> None:
        if self._run_id:
            self.log.info("Terminating Dagster run %s", self._run_id)
            self._graphql(TERMINATE, {"runId": self._run_id})
