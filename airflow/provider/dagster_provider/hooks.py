"""`DagsterHook`: Dagster's webserver GraphQL API, read from an Airflow Connection.

The connection (default `dagster_default`, e.g. `AIRFLOW_CONN_DAGSTER_DEFAULT`):

- host: the webserver's URL (`http://webserver:3000`), or a bare host name with
  port/schema (`http`/`https`) in their own fields;
- password (optional): an API token, sent as `Authorization: Bearer <token>`, or as the
  raw value of the header named by extra `token_header` (e.g. `Dagster-Cloud-Api-Token`);
- extra (optional JSON): `verify` (false to skip TLS verification), `ca_bundle` (path to
  a CA file), `timeout` (seconds per request, default 30), `location` (code location,
  default `buffalo_assets`), `repository` (default: asked from Dagster's workspace).

It has a blocking side (the worker: launch, find, terminate) and an async side (the
triggerer: status polls, terminate) over httpx, so the same settings serve both. The
token never appears in errors or logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

try:  # Airflow 3
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.10+
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

try:
    from airflow.exceptions import AirflowException
except ImportError:  # pragma: no cover - every supported Airflow has it
    AirflowException = RuntimeError  # type: ignore[misc,assignment]

from dagster_provider.provider_info import (
    CONNECTION_TYPE,
    EXTRA_FIELDS,
    HIDDEN_FIELDS,
    PLACEHOLDERS,
    RELABELING,
)

DEFAULT_CONN_ID = "dagster_default"
DEFAULT_LOCATION = "buffalo_assets"
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
ENDED_FAILED = {"FAILURE", "CANCELED"}
# Tags Dagster's run retries (`run_retries` in dagster.yaml) put on a failed run: whether it
# will be retried, then the id of the run retrying it.
WILL_RETRY_TAG = "dagster/will_retry"
# How long a killed task waits for a retry Dagster announced, to stop it too (within the
# triggerer's time for a trigger's on_kill).
STOP_WAIT_S = 20.0
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"

WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""
# `launchRun` is the current name of the mutation (`launchPipelineExecution` is its legacy
# alias); an asset selection runs in the location's implicit asset job.
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
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
    ... on InvalidSubsetError { message }
  }
}
"""
FIND = """
query Find($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
    ... on InvalidPipelineRunsFilterError { message }
  }
}
"""
STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } }
    ... on PythonError { message }
    ... on RunNotFoundError { message }
  }
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
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""


class DagsterApiError(AirflowException):  # type: ignore[misc,valid-type]
    """Dagster answered, but not with what was asked (HTTP error, GraphQL error, refusal)."""


class DagsterRunNotFound(DagsterApiError):
    """Dagster does not know the run (deleted, or another instance)."""


class DagsterUnreachable(DagsterApiError):
    """No answer from Dagster (refused, timed out, TLS failed). The message never holds the
    token, even when the error quoted the request's headers."""

    def __init__(self, settings: DagsterConnection, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        if settings.token:
            text = text.replace(settings.token, "***")
        super().__init__(f"could not reach Dagster at {settings.base_url}: {text}")


@dataclass(frozen=True)
class DagsterConnection:
    """What a request to Dagster needs, taken from an Airflow Connection."""

    conn_id: str
    base_url: str
    token: str | None
    token_header: str
    verify: bool | str
    timeout: float
    location: str
    repository: str | None

    @classmethod
    def from_airflow(cls, conn: Any) -> DagsterConnection:
        extra = _extra(conn)
        host = (conn.host or "").strip().rstrip("/")
        if not host:
            raise DagsterApiError(
                f"Airflow connection '{conn.conn_id}' has no host: set the Dagster webserver URL"
            )
        if "://" not in host:
            scheme = conn.schema if conn.schema in ("http", "https") else extra.get("scheme")
            if scheme not in ("http", "https"):
                scheme = "https" if conn.conn_type == "https" else "http"
            host = f"{scheme}://{host}"
        if conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        verify: bool | str = extra.get("ca_bundle") or _flag(extra.get("verify", True))
        return cls(
            conn_id=conn.conn_id,
            base_url=host,
            token=_token(conn),
            token_header=str(extra.get("token_header") or "Authorization"),
            verify=verify,
            timeout=float(extra.get("timeout", 30)),
            location=str(extra.get("location") or DEFAULT_LOCATION),
            repository=extra.get("repository") or None,
        )

    @property
    def headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        if self.token_header.lower() == "authorization":
            return {"Authorization": f"Bearer {self.token}"}
        return {self.token_header: self.token}

    def run_url(self, run_id: str) -> str:
        return f"{self.base_url}/runs/{run_id}"


def _token(conn: Any) -> str | None:
    """The connection's password as a token: surrounding whitespace (a secrets file's newline)
    dropped; a control character inside is refused without quoting the token."""
    token = (conn.password or "").strip()
    if any(ord(char) < 32 or ord(char) == 127 for char in token):
        raise DagsterApiError(
            f"Airflow connection '{conn.conn_id}': the API token in the password field contains a "
            "control character; paste it again"
        )
    return token or None


def _extra(conn: Any) -> dict[str, Any]:
    dejson = getattr(conn, "extra_dejson", None)
    if isinstance(dejson, Mapping):
        extra = dict(dejson)
    else:
        extra = json.loads(conn.extra) if getattr(conn, "extra", None) else {}
    # Forms of older Airflow versions stored a field as `extra__dagster__<name>`; empty
    # form fields are stored as "" or None and mean "not set".
    prefix = f"extra__{CONNECTION_TYPE}__"
    plain = {key.removeprefix(prefix): value for key, value in extra.items() if key.startswith(prefix)}
    plain.update({key: value for key, value in extra.items() if not key.startswith(prefix)})
    return {key: value for key, value in plain.items() if value not in ("", None)}


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


def _sole(location: str, repositories: list[str]) -> str:
    if len(repositories) != 1:
        raise DagsterApiError(
            f"Dagster code location '{location}' has repositories {repositories}: set "
            "`repository` in the connection's extra"
        )
    return repositories[0]


def _payload(query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    return {"query": query, "variables": dict(variables)}


def _data(settings: DagsterConnection, response: httpx.Response) -> dict[str, Any]:
    where = f"Dagster at {settings.base_url} (connection '{settings.conn_id}')"
    if response.status_code in (401, 403):
        raise DagsterApiError(
            f"{where} refused the request (HTTP {response.status_code}): check the token in the "
            "connection's password field"
        )
    if response.status_code >= 400:
        raise DagsterApiError(f"{where} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError as error:
        raise DagsterApiError(
            f"{where} answered with something other than JSON: {response.text[:200]}"
        ) from error
    if body.get("errors"):
        raise DagsterApiError(f"{where} GraphQL error: {body['errors'][0].get('message')}")
    return body["data"]


def _refusal(result: Mapping[str, Any]) -> str:
    for field in ("message", "errors", "invalidStepKey"):
        if result.get(field):
            return str(result[field])
    return str(result.get("__typename"))


class DagsterHook(BaseHook):
    """Talk to a Dagster webserver's GraphQL API as configured in an Airflow Connection."""

    conn_name_attr = "dagster_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONNECTION_TYPE
    hook_name = "Dagster"

    # -- the connection form (Airflow 2; Airflow 3 reads the provider info) ---------------
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from wtforms import BooleanField, IntegerField, StringField

        widgets: dict[str, Any] = {}
        for key, (label, schema, description) in EXTRA_FIELDS.items():
            kinds = schema["type"]
            if "boolean" in kinds:
                widgets[key] = BooleanField(label, description=description, default=schema.get("default"))
            elif "integer" in kinds:
                widgets[key] = IntegerField(
                    label, widget=BS3TextFieldWidget(), description=description, default=schema.get("default")
                )
            else:
                widgets[key] = StringField(label, widget=BS3TextFieldWidget(), description=description)
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": HIDDEN_FIELDS, "relabeling": RELABELING, "placeholders": PLACEHOLDERS}

    def test_connection(self) -> tuple[bool, str]:
        """The Connections page's Test button: can Dagster be reached, with this token, and
        does it serve the code location?"""
        try:
            settings = self.settings
        except (DagsterApiError, ValueError) as error:  # no host, an extra that is not JSON
            return False, str(error)
        try:  # always asked, so a wrong URL or token fails even with `repository` set
            repositories = self.repositories(settings.location)
        except DagsterApiError as error:
            return False, str(error)
        repository = settings.repository or _sole(settings.location, repositories)
        if repository not in repositories:
            return False, (
                f"Dagster code location '{settings.location}' has no repository '{repository}' "
                f"(it has {repositories})"
            )
        return True, (
            f"Dagster at {settings.base_url} serves code location '{settings.location}' "
            f"(repository '{repository}')"
        )

    def __init__(self, dagster_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dagster_conn_id = dagster_conn_id
        self._settings: DagsterConnection | None = None

    # -- connection --------------------------------------------------------------------
    @property
    def settings(self) -> DagsterConnection:
        if self._settings is None:
            self._settings = DagsterConnection.from_airflow(self.get_connection(self.dagster_conn_id))
        return self._settings

    async def asettings(self) -> DagsterConnection:
        if self._settings is None:
            getter = getattr(BaseHook, "aget_connection", None)
            if getter is not None:  # Airflow 3: never block the triggerer's event loop
                conn = await getter(self.dagster_conn_id)
            else:  # Airflow 2: a metadata DB or secrets-backend read, in a thread
                conn = await asyncio.to_thread(BaseHook.get_connection, self.dagster_conn_id)
            self._settings = DagsterConnection.from_airflow(conn)
        return self._settings

    # -- blocking side (the worker) -----------------------------------------------------
    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        settings = self.settings
        try:
            with httpx.Client(
                verify=settings.verify, timeout=settings.timeout, headers=settings.headers
            ) as client:
                response = client.post(f"{settings.base_url}/graphql", json=_payload(query, variables or {}))
        except (httpx.HTTPError, OSError) as error:
            raise DagsterUnreachable(settings, error) from None
        return _data(settings, response)

    def repository_name(self, location: str) -> str:
        """The repository Dagster serves in `location` (the one a `Definitions` object makes)."""
        return _sole(location, self.repositories(location))

    def repositories(self, location: str) -> list[str]:
        """The repositories Dagster serves in code location `location`."""
        found = self.graphql(WORKSPACE)["workspaceOrError"]
        if found["__typename"] != "Workspace":
            raise DagsterApiError(f"Dagster could not list its workspace: {_refusal(found)}")
        names = [entry["name"] for entry in found["locationEntries"]]
        for entry in found["locationEntries"]:
            if entry["name"] != location:
                continue
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") != "RepositoryLocation":
                raise DagsterApiError(
                    f"Dagster code location '{location}' failed to load: {_refusal(loaded)}"
                )
            return [repo["name"] for repo in loaded["repositories"]]
        raise DagsterApiError(f"Dagster has no code location '{location}' (it has {names})")

    def launch_run(
        self,
        asset_selection: Sequence[str],
        *,
        tags: Mapping[str, str],
        run_config: Mapping[str, Any] | None = None,
        location: str | None = None,
        repository: str | None = None,
    ) -> str:
        """Launch a run materializing `asset_selection` ("a/b" keys); return its id."""
        settings = self.settings
        location = location or settings.location
        repository = repository or settings.repository or self.repository_name(location)
        params: dict[str, Any] = {
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": repository,
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": key.split("/")} for key in asset_selection],
            },
            "executionMetadata": {"tags": [{"key": k, "value": str(v)} for k, v in tags.items()]},
        }
        if run_config:
            params["runConfigData"] = dict(run_config)
        launched = self.graphql(LAUNCH, {"params": params})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise DagsterApiError(f"Dagster refused to launch {list(asset_selection)}: {_refusal(launched)}")
        return str(launched["run"]["runId"])

    def find_runs(self, tags: Mapping[str, str]) -> list[dict[str, Any]]:
        """Runs carrying every tag in `tags`, newest first, as {runId, status, tags}."""
        tag_filter = [{"key": k, "value": str(v)} for k, v in tags.items()]
        found = self.graphql(FIND, {"filter": {"tags": tag_filter}})["runsOrError"]
        if found["__typename"] != "Runs":
            raise DagsterApiError(f"Dagster could not list runs: {_refusal(found)}")
        return [
            {**run, "tags": {tag["key"]: tag["value"] for tag in run["tags"]}} for run in found["results"]
        ]

    def run_status(self, run_id: str) -> str:
        return self.run_state(run_id).status

    def run_state(self, run_id: str) -> RunState:
        return _state(self.graphql(STATUS, {"runId": run_id})["runOrError"], run_id)

    def failure_messages(self, run_id: str) -> list[str]:
        logs = self.graphql(FAILURES, {"runId": run_id})["logsForRun"]
        messages = []
        for event in logs.get("events", []):
            if event["__typename"] == "ExecutionStepFailureEvent":
                messages.append(f"{event['stepKey']}: {event['error']['message'].strip()}")
            elif event.get("message") and event["__typename"] in ("RunFailureEvent", "RunCanceledEvent"):
                messages.append(event["message"])
        return messages

    def terminate(self, run_id: str) -> None:
        _terminated(self.graphql(TERMINATE, {"runId": run_id})["terminateRun"], run_id)

    def run_to_stop(self, run_id: str, wait_s: float = STOP_WAIT_S) -> str | None:
        """The run of `run_id`'s chain of Dagster retries that is still going, to stop when
        the task is killed: the retry if Dagster retried it (waiting up to `wait_s` for a retry
        it announced); None when the chain has ended."""
        deadline = time.monotonic() + wait_s
        while True:
            state = self.run_state(run_id)
            if state.retried_by:
                run_id = state.retried_by
            elif state.status not in ENDED:
                return run_id
            elif not state.retry_pending or time.monotonic() > deadline:
                return None
            else:
                time.sleep(1.0)

    # -- async side (the triggerer) -----------------------------------------------------
    async def agraphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        settings = await self.asettings()
        try:
            async with httpx.AsyncClient(
                verify=settings.verify, timeout=settings.timeout, headers=settings.headers
            ) as client:
                response = await client.post(
                    f"{settings.base_url}/graphql", json=_payload(query, variables or {})
                )
        except (httpx.HTTPError, OSError) as error:
            raise DagsterUnreachable(settings, error) from None
        return _data(settings, response)

    async def arun_status(self, run_id: str) -> str:
        return (await self.arun_state(run_id)).status

    async def arun_state(self, run_id: str) -> RunState:
        return _state((await self.agraphql(STATUS, {"runId": run_id}))["runOrError"], run_id)

    async def aterminate(self, run_id: str) -> None:
        _terminated((await self.agraphql(TERMINATE, {"runId": run_id}))["terminateRun"], run_id)

    async def arun_to_stop(self, run_id: str, wait_s: float = STOP_WAIT_S) -> str | None:
        """`run_to_stop` for the triggerer."""
        deadline = time.monotonic() + wait_s
        while True:
            state = await self.arun_state(run_id)
            if state.retried_by:
                run_id = state.retried_by
            elif state.status not in ENDED:
                return run_id
            elif not state.retry_pending or time.monotonic() > deadline:
                return None
            else:
                await asyncio.sleep(1.0)


@dataclass(frozen=True)
class RunState:
    """A Dagster run's status, and what Dagster's run retries say about it."""

    run_id: str
    status: str
    tags: Mapping[str, str]

    @property
    def retry_pending(self) -> bool:
        """Failed, and Dagster's run retries will launch (or launched) another run for it."""
        return self.status == "FAILURE" and self.tags.get(WILL_RETRY_TAG, "").lower() == "true"

    @property
    def retried_by(self) -> str | None:
        """The run Dagster's run retries launched for this failed one, once launched."""
        return self.tags.get(AUTO_RETRY_RUN_ID_TAG) or None


ENDED_STEP = "ended"
WAIT_STEP = "wait"


def after_end(state: RunState, *, follow_retries: bool, confirmed: bool) -> str:
    """What a waiter does once `state` has ended: ENDED_STEP (report it), WAIT_STEP (Dagster
    will retry it and has not launched the retry yet, or a failure not yet tagged), or the id
    of the run retrying it (follow that one instead).

    Dagster tags a failed run `dagster/will_retry` a moment after it fails, so a failure
    without the tag is read once more (`confirmed=False`) before it is taken as final.
    """
    if not follow_retries or state.status != "FAILURE":
        return ENDED_STEP
    if state.retried_by:
        return state.retried_by
    if state.retry_pending or (WILL_RETRY_TAG not in state.tags and not confirmed):
        return WAIT_STEP
    return ENDED_STEP


def no_retry_launched(retry_wait: float) -> str:
    return (
        f"Dagster was to retry it, but launched no retry within {retry_wait:.0f} s "
        "(is the Dagster daemon running?)"
    )


def _state(found: Mapping[str, Any], run_id: str) -> RunState:
    if found["__typename"] == "RunNotFoundError":
        raise DagsterRunNotFound(f"Dagster has no run {run_id}: {found.get('message', '')}")
    if found["__typename"] != "Run":
        raise DagsterApiError(f"Dagster could not read run {run_id}: {_refusal(found)}")
    tags = {tag["key"]: tag["value"] for tag in found.get("tags") or ()}
    return RunState(run_id=run_id, status=str(found["status"]), tags=tags)


def _terminated(result: Mapping[str, Any], run_id: str) -> None:
    if result["__typename"] == "TerminateRunSuccess":
        return
    raise DagsterApiError(f"Dagster did not terminate run {run_id}: {_refusal(result)}")
