# Airflow for the operations team's DAG: the official apache/airflow image of the version the
# tests run (airflow/requirements.txt), with Airflow's official constraints for that version,
# plus the Dagster provider (airflow/provider) installed by pip, as any provider is. One image,
# four containers (api-server, scheduler, dag-processor, triggerer; see docker-compose.yml);
# it reaches Dagster through connection dagster_default.
#
# Without access to GitHub at build time, use the constraints the tests ran with instead
# (airflow/constraints.txt, copied in below):
#   --build-arg AIRFLOW_CONSTRAINTS=/opt/buffalo/constraints.txt
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

ARG AIRFLOW_VERSION
ARG PYTHON_VERSION
ARG AIRFLOW_CONSTRAINTS=https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_VERSION}.txt

ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__TEST_CONNECTION=Enabled \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER airflow
COPY --chown=airflow:root airflow/provider /opt/buffalo/provider
COPY --chown=airflow:root airflow/constraints.txt /opt/buffalo/constraints.txt
# apache-airflow==<version> in the same command keeps pip from moving Airflow itself.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/buffalo/provider \
        --constraint "${AIRFLOW_CONSTRAINTS}" \
    && pip check
COPY --chown=airflow:root airflow/dags /opt/airflow/dags

EXPOSE 8080
CMD ["api-server", "--host", "0.0.0.0", "--port", "8080"]
