"""A small Dagster provider for Airflow: hook, deferrable operator and trigger.

An installable provider package (`airflow/provider`, distribution
airflow-provider-buffalo-dagster), installed with pip into every Airflow component's
environment, the triggerer's included, so the trigger's class path imports wherever it runs.
Its entry point registers connection type `dagster` and the "Dagster run" link
(`provider_info.py`). Needs only httpx besides Airflow 2.10+ or 3.x.
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
