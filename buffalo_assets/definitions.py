"""The one place that wires the platform together: assets, resources, jobs, schedules.

Buffalo settings come from the environment (or `.env`); when `BUFFALO_BASE_URL` is unset
they point at the local sandbox and its documented default credentials. When
`BUFFALO_PG_URL` is unset the embedded PostgreSQL is started and its URL used.
"""

from __future__ import annotations

import os

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    sensor,
)
from dagster._core.launcher import DefaultRunLauncher

from buffalo_assets import settings
from buffalo_assets.alerts import alert_on_run_failure
from buffalo_assets.assets.ingestion import order_ids, raw_orders
from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.buffalo.resource import BuffaloResource
from buffalo_assets.checks.core import core_checks
from buffalo_assets.runs import release_ended_runs_slots, release_pool_slots
from buffalo_assets.storage.database import PG_URL_VARIABLE, database_url
from buffalo_assets.storage.io_manager import PostgresIOManager
from buffalo_assets.storage.resource import PostgresResource

settings.load_environment()
using_sandbox = settings.apply_sandbox_defaults()
os.environ[PG_URL_VARIABLE] = database_url()

buffalo = BuffaloResource(
    base_url=EnvVar("BUFFALO_BASE_URL"),
    username=EnvVar("BUFFALO_USERNAME"),
    password=EnvVar("BUFFALO_PASSWORD"),
    concurrency=int(os.environ.get("BUFFALO_CONCURRENCY", "16")),
    requests_per_second=float(os.environ.get("BUFFALO_REQUESTS_PER_SECOND", "0")),
    verify_tls=settings.env_flag("BUFFALO_VERIFY_TLS", default=True),
    ca_bundle=os.environ.get("BUFFALO_CA_BUNDLE") or None,
    max_response_bytes=int(os.environ.get("BUFFALO_MAX_RESPONSE_BYTES", str(5 * 1024 * 1024))),
)

ingest_orders = define_asset_job(
    "ingest_orders",
    selection=[order_ids, raw_orders],
    description="List every Buffalo order id, then fetch new and in-flight orders' details.",
)

refresh_all = define_asset_job(
    "refresh_all",
    selection=AssetSelection.all(),
    description="Ingest, then rebuild what changed in core, with every asset check.",
)

# On by default where a real API is configured; a laptop on the sandbox opts in.
schedule_on = settings.env_flag("BUFFALO_SCHEDULE_ENABLED", default=not using_sandbox)
ingest_schedule = ScheduleDefinition(
    name="ingest_orders_schedule",
    job=ingest_orders,
    cron_schedule=os.environ.get("BUFFALO_INGEST_CRON", "*/15 * * * *"),
    execution_timezone="Africa/Johannesburg",
    default_status=DefaultScheduleStatus.RUNNING if schedule_on else DefaultScheduleStatus.STOPPED,
    description="Ingest every 15 minutes (BUFFALO_INGEST_CRON).",
)


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Frees the API pool slots of ended runs (canceled, failed) and of runs whose "
    "process died (SIGKILL, OOM), marking the latter failed.",
)
def release_dead_runs_sensor(context: SensorEvaluationContext) -> SkipReason:
    if not isinstance(context.instance.run_launcher, DefaultRunLauncher):
        # Process ids mean nothing for runs in other containers: free ended runs' slots only.
        freed = release_ended_runs_slots(context.instance)
    else:
        freed = release_pool_slots(context.instance)
    return SkipReason(f"freed the pool slots of {len(freed)} runs" if freed else "no leaked pool slots")


# Declarative automation: keeps `core` current after every ingest. Declared (not left to
# Dagster's default sensor) so that it is on from the first deployment.
core_automation = AutomationConditionSensorDefinition(
    "core_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes the core tables whenever raw_orders changed.",
)

defs = Definitions(
    assets=[order_ids, raw_orders, transform_orders],
    asset_checks=core_checks(),
    jobs=[ingest_orders, refresh_all],
    schedules=[ingest_schedule],
    sensors=[release_dead_runs_sensor, alert_on_run_failure, core_automation],
    resources={
        "buffalo": buffalo,
        "postgres": PostgresResource(url=EnvVar(PG_URL_VARIABLE)),
        "postgres_io": PostgresIOManager(url=EnvVar(PG_URL_VARIABLE)),
    },
)
