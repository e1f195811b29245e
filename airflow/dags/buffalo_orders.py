"""The operations team's DAG: `buffalo_orders`, `get_order_ids` >> `fetch_and_store_raw`.

The DAG and task ids are the original contract. Each task asks Dagster (Airflow
Connection `dagster_default`) to materialize the matching asset and waits for the run in
the triggerer, so lineage, metadata and run history live in Dagster while Airflow keeps
the schedule, retries and alerting it had.

One orchestrator schedules the ingest: `BUFFALO_ORCHESTRATOR=airflow` turns this DAG's
schedule on (and Dagster's `ingest_orders_schedule` off); with `dagster` (the default)
the DAG has no schedule and runs only when triggered.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from dagster_provider import DagsterAssetRunOperator, notify_ops_on_failure

try:  # Airflow 3
    from airflow.sdk import DAG
    from airflow.sdk import Asset as Outlet
except ImportError:  # Airflow 2.10+
    from airflow.datasets import Dataset as Outlet

    from airflow import DAG

# What each task updates, for data-aware scheduling: a DAG with `schedule=[Asset(uri)]`
# (Airflow 2: `Dataset(uri)`) runs after each successful ingest.
ORDER_IDS_TABLE = "buffalo://raw/order_ids"
ORDER_VERSIONS_TABLE = "buffalo://raw/order_versions"

ORCHESTRATORS = ("dagster", "airflow")
ORCHESTRATOR = os.environ.get("BUFFALO_ORCHESTRATOR", "dagster").strip().lower() or "dagster"
if ORCHESTRATOR not in ORCHESTRATORS:
    raise ValueError(f"BUFFALO_ORCHESTRATOR is {ORCHESTRATOR!r}; expected one of {', '.join(ORCHESTRATORS)}")

# The schedule is read in South African time, as Dagster reads its own: a daily `0 6 * * *`
# runs at 06:00 in Johannesburg (04:00 UTC) whichever orchestrator schedules.
TIMEZONE = "Africa/Johannesburg"
# Same cadence as Dagster's ingest_orders_schedule unless the operations team changes it.
# Empty counts as unset (compose passes `${VAR:-}`), as in the Dagster settings.
CRON = os.environ.get("BUFFALO_AIRFLOW_SCHEDULE") or os.environ.get("BUFFALO_INGEST_CRON") or "*/15 * * * *"
SCHEDULE = CRON if ORCHESTRATOR == "airflow" else None


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("false", "0", "no", "off")


default_args = {
    "owner": "operations",
    "retries": int(os.environ.get("BUFFALO_AIRFLOW_RETRIES", "2")),
    "retry_delay": timedelta(seconds=float(os.environ.get("BUFFALO_AIRFLOW_RETRY_DELAY_S", "60"))),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=int(os.environ.get("BUFFALO_AIRFLOW_TASK_TIMEOUT_MIN", "60"))),
    "dagster_conn_id": os.environ.get("BUFFALO_AIRFLOW_DAGSTER_CONN_ID", "dagster_default"),
    "deferrable": _flag("BUFFALO_AIRFLOW_DEFERRABLE", default=True),
    "poll_interval": float(os.environ.get("BUFFALO_AIRFLOW_POLL_INTERVAL_S", "5")),
    # A failure only Airflow sees goes to BUFFALO_OPS_ALERT_WEBHOOK; Dagster reports its runs'.
    "on_failure_callback": notify_ops_on_failure,
}

with DAG(
    dag_id="buffalo_orders",
    description="Buffalo orders into PostgreSQL, materialized by Dagster",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz=TIMEZONE),
    catchup=False,
    max_active_runs=1,
    # Active from the start: BUFFALO_ORCHESTRATOR alone decides whether it is scheduled, and a
    # manual trigger must run rather than wait behind Airflow's "paused at creation".
    is_paused_upon_creation=False,
    default_args=default_args,
    # Trigger with {"full_refresh": true} to re-fetch every known order, delivered ones too.
    params={"full_refresh": False},
    render_template_as_native_obj=True,
    tags=["buffalo", "dagster"],
) as dag:
    get_order_ids = DagsterAssetRunOperator(
        task_id="get_order_ids", asset_selection=["order_ids"], outlets=[Outlet(ORDER_IDS_TABLE)]
    )
    fetch_and_store_raw = DagsterAssetRunOperator(
        task_id="fetch_and_store_raw",
        asset_selection=["raw_orders"],
        outlets=[Outlet(ORDER_VERSIONS_TABLE)],
        run_config={"ops": {"ingest": {"config": {"full_refresh": "{{ params.full_refresh }}"}}}},
    )
    get_order_ids >> fetch_and_store_raw
