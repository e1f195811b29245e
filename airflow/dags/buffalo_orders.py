"""The operations team's DAG: `buffalo_orders`, `get_order_ids` >> `fetch_and_store_raw`.

The DAG and task ids are the original contract. Each task asks Dagster (at DAGSTER_URL)
to materialize the matching asset and waits for the run, so lineage, metadata and run
history live in Dagster while Airflow keeps the schedule, retries and alerting it had.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from dagster_trigger import MaterializeDagsterAssets

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.10+
    from airflow import DAG

# Same cadence as Dagster's ingest_orders_schedule unless the operations team changes it.
SCHEDULE = os.environ.get("BUFFALO_AIRFLOW_SCHEDULE", os.environ.get("BUFFALO_INGEST_CRON", "*/15 * * * *"))

default_args = {
    "owner": "operations",
    "retries": int(os.environ.get("BUFFALO_AIRFLOW_RETRIES", "2")),
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=int(os.environ.get("BUFFALO_AIRFLOW_TASK_TIMEOUT_MIN", "60"))),
}

with DAG(
    dag_id="buffalo_orders",
    description="Buffalo orders into PostgreSQL, materialized by Dagster",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["buffalo", "dagster"],
) as dag:
    get_order_ids = MaterializeDagsterAssets(task_id="get_order_ids", asset_keys=["order_ids"])
    fetch_and_store_raw = MaterializeDagsterAssets(task_id="fetch_and_store_raw", asset_keys=["raw_orders"])
    get_order_ids >> fetch_and_store_raw
