"""Registers the "Dagster run" link of `DagsterAssetRunOperator` with Airflow.

Airflow 2 shows an operator's extra link only when a plugin registers its class; Airflow 3
reads the link's URL from XCom and accepts the registration too.
"""

from airflow.plugins_manager import AirflowPlugin
from dagster_provider.operators import DagsterRunLink


class DagsterProviderPlugin(AirflowPlugin):
    name = "dagster_provider"
    operator_extra_links = [DagsterRunLink()]  # noqa: RUF012 - Airflow reads a list
