"""A small Dagster provider for Airflow: hook, deferrable operator and trigger.

Lives in Airflow's plugins folder (on `sys.path` in every Airflow component, the
triggerer included, on Airflow 2 and 3), so the trigger's class path imports wherever it
runs. Needs only httpx besides Airflow.
"""

from dagster_provider.hooks import DagsterApiError, DagsterHook
from dagster_provider.notifications import notify_ops_on_failure
from dagster_provider.operators import XCOM_RUN_ID, DagsterAssetRunOperator, DagsterRunFailed
from dagster_provider.triggers import DagsterRunTrigger

__all__ = [
    "XCOM_RUN_ID",
    "DagsterApiError",
    "DagsterAssetRunOperator",
    "DagsterHook",
    "DagsterRunFailed",
    "DagsterRunTrigger",
    "notify_ops_on_failure",
]
