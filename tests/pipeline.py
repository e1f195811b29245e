"""Running the platform's assets the way Dagster does, for tests: real resources, real instance."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import AssetsDefinition, AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

from buffalo_assets.assets.analytics import ANALYTICS_ASSETS, ANALYTICS_CHECKS
from buffalo_assets.assets.ingestion import ingest
from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.buffalo.resource import BuffaloResource
from buffalo_assets.checks.core import core_checks
from buffalo_assets.sandbox.server import RunningSandbox
from buffalo_assets.settings import analytics_as_of
from buffalo_assets.storage.io_manager import PostgresIOManager
from buffalo_assets.storage.resource import PostgresResource

QUICK_CLIENT = {"connect_timeout": 2.0, "read_timeout": 1.0}
INGESTION: list[AssetsDefinition] = [ingest]
EVERYTHING: list[AssetsDefinition] = [ingest, transform_orders, *core_checks()]
# Everything through analytics, with the delay model's gate check (it blocks nothing).
ANALYTICS: list[Any] = [*EVERYTHING, *ANALYTICS_ASSETS, *ANALYTICS_CHECKS]


@dataclass(frozen=True)
class ApiTarget:
    """A Buffalo API to ingest from: a sandbox in this process or one served elsewhere."""

    url: str
    username: str
    password: str

    @classmethod
    def of(cls, running: RunningSandbox | ApiTarget) -> ApiTarget:
        if isinstance(running, ApiTarget):
            return running
        return cls(running.url, running.sandbox.config.username, running.sandbox.config.password)


def resources(
    running: RunningSandbox | ApiTarget | None, pg_url: str, password: str | None = None, **client: Any
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "postgres": PostgresResource(url=pg_url),
        "postgres_io": PostgresIOManager(url=pg_url),
    }
    if running is not None:
        target = ApiTarget.of(running)
        found["buffalo"] = BuffaloResource(
            base_url=target.url,
            username=target.username,
            password=password or target.password,
            **{**QUICK_CLIENT, **client},
        )
    return found


def run(
    running: RunningSandbox | ApiTarget | None,
    pg_url: str,
    instance: DagsterInstance,
    assets: Sequence[AssetsDefinition] = INGESTION,
    *,
    selection: AssetSelection | None = None,
    password: str | None = None,
    run_config: dict[str, Any] | None = None,
    as_of: str | None = None,
    **client: Any,
) -> ExecuteInProcessResult:
    """Materialize `assets` in process; `as_of` (ISO time) runs the analytics as of that moment
    (BUFFALO_ANALYTICS_AS_OF, as a user replaying a day would set it)."""
    with analytics_as_of(as_of):
        return materialize(
            assets,
            instance=instance,
            resources=resources(running, pg_url, password, **client),
            run_config=run_config,
            selection=selection,
            raise_on_error=False,
        )


def world_now(running: RunningSandbox) -> str:
    """The sandbox clock, as an ISO time for `run(..., as_of=...)`."""
    now = float(running.sandbox.now)
    return datetime.fromtimestamp(now, UTC).isoformat()


def metadata_of(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def check_results(result: ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


ROOT = Path(__file__).resolve().parents[1]
# What an operator types to ingest, run as a subprocess exactly like that.
MATERIALIZE = [
    str(ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize",
    "-m", "buffalo_assets.definitions", "--select", "order_ids,raw_orders",
]  # fmt: skip


def subprocess_env(
    running: RunningSandbox | ApiTarget, pg_url: str, dagster_home: Path, **extra: str
) -> dict[str, str]:
    """The environment a Dagster process needs to ingest from `running` into `pg_url`."""
    target = ApiTarget.of(running)
    return {
        **os.environ,
        "BUFFALO_PG_URL": pg_url,
        "DAGSTER_HOME": str(dagster_home),
        "BUFFALO_BASE_URL": target.url,
        "BUFFALO_USERNAME": target.username,
        "BUFFALO_PASSWORD": target.password,
        **extra,
    }


def stop_group(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Stop a process started with start_new_session=True, and everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
