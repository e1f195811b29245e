"""The one place that wires the platform together: assets, resources, jobs, schedules.

Importing this module reads the settings (`settings.load()`: the environment and `.env`)
and builds definitions; it starts no process, writes no file and changes no environment
variable. Secrets reach resources as `EnvVar`s, resolved when a run starts. With
`BUFFALO_BASE_URL` unset the Buffalo resource points at the local sandbox and its public
default credentials; with `BUFFALO_PG_URL` unset the database resources use the embedded
server that a `buffalo` command started (or fail with one line saying which command to run).
"""

from __future__ import annotations

import gc
import logging

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultRunLauncher,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)

from buffalo_assets import settings
from buffalo_assets.assets.analytics import ANALYTICS_ASSETS, ANALYTICS_CHECKS
from buffalo_assets.assets.customer_alerts import (
    customer_alerts,
    send_customer_alerts_job,
    send_customer_alerts_sensor,
)
from buffalo_assets.assets.ingestion import ingest
from buffalo_assets.assets.stock import STOCK_ASSETS
from buffalo_assets.assets.transform import transform_orders
from buffalo_assets.buffalo.resource import BuffaloResource
from buffalo_assets.checks.core import core_checks
from buffalo_assets.operations.failure_alerts import alert_on_run_failure
from buffalo_assets.operations.runs import release_ended_runs_slots, release_pool_slots
from buffalo_assets.storage.database import PG_URL_VARIABLE
from buffalo_assets.storage.io_manager import PostgresIOManager
from buffalo_assets.storage.resource import PostgresResource

config = settings.load()
# The code server's log (and `dagster dev`'s terminal) is where a deployment's operators see
# that a renamed setting is still set by its old name.
for _renamed in settings.renamed_warnings(config):
    logging.getLogger("buffalo_assets").warning(_renamed)


def _configured(field: str) -> EnvVar | None:
    """An EnvVar for a setting configured now; unset ones are read when a client is made."""
    return EnvVar(settings.env_name(field)) if getattr(config, field) is not None else None


buffalo = BuffaloResource(
    base_url=_configured("base_url"),
    username=_configured("username"),
    password=_configured("password"),
    **config.client_options().model_dump(),
)
# Unset: resolved when used (the embedded server a `buffalo` command started, or one line
# naming the command to run), so that loading the definitions never needs a database.
database_url = EnvVar(PG_URL_VARIABLE) if config.pg_url else None

ingest_orders = define_asset_job(
    "ingest_orders",
    selection=[ingest],
    description="List every Buffalo order id, then fetch new and in-flight orders' details.",
)

refresh_all = define_asset_job(
    "refresh_all",
    selection=AssetSelection.all(),
    description="Ingest, rebuild what changed in core, then the analytics, with every asset check.",
)

# On where Dagster orchestrates and a real API is configured; a laptop on the sandbox opts
# in, and with BUFFALO_ORCHESTRATOR=airflow the Airflow DAG schedules instead.
ingest_schedule = ScheduleDefinition(
    name="ingest_orders_schedule",
    job=ingest_orders,
    cron_schedule=config.ingest_cron,
    execution_timezone="Africa/Johannesburg",
    default_status=DefaultScheduleStatus.RUNNING if config.schedule_on else DefaultScheduleStatus.STOPPED,
    description=(
        f"Ingest on cron {config.ingest_cron!r} (BUFFALO_INGEST_CRON) while BUFFALO_ORCHESTRATOR is dagster"
    ),
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


# Declarative automation: keeps `core`, then `analytics`, current after every ingest. Declared (not left to
# Dagster's default sensor) so that it is on from the first deployment.
core_automation = AutomationConditionSensorDefinition(
    "core_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes the core tables whenever raw_orders changed, and the analytics "
    "whenever core changed.",
)

# Every job, and the asset jobs launched from the UI, Airflow or `dagster asset materialize`, run
# their steps one after another in the run's own process. A process per step (Dagster's
# default) cost 5-6 s of start-up each (Dagster and the project imported again) around seconds
# of work. The pool slot and the retry policies are honoured the same in process, and a run
# whose process dies (SIGKILL, OOM) is released by release_dead_runs_sensor as before.
defs = Definitions(
    executor=in_process_executor,
    assets=[ingest, transform_orders, *ANALYTICS_ASSETS, customer_alerts, *STOCK_ASSETS],
    asset_checks=[*core_checks(), *ANALYTICS_CHECKS],
    jobs=[ingest_orders, refresh_all, send_customer_alerts_job],
    schedules=[ingest_schedule],
    sensors=[
        release_dead_runs_sensor,
        alert_on_run_failure,
        core_automation,
        send_customer_alerts_sensor,
    ],
    resources={
        "buffalo": buffalo,
        "postgres": PostgresResource(url=database_url),
        "postgres_io": PostgresIOManager(url=database_url),
    },
)
# Everything imported and built above lives as long as the process: out of the collector's
# reach (see buffalo_assets/__init__.py).
gc.freeze()
