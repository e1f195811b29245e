# Airflow for the operations team's DAG, in its own image: its dependencies never mix
# with Dagster's. One image, four containers (api-server, scheduler, dag-processor,
# triggerer; see docker-compose.yml); it reaches Dagster through connection dagster_default.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

RUN groupadd --system airflow && useradd --system --gid airflow --home-dir /opt/airflow airflow

WORKDIR /opt/airflow
COPY airflow/requirements.txt airflow/constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt && pip check
COPY airflow/dags ./dags
COPY airflow/plugins ./plugins
RUN mkdir -p /opt/airflow/logs && chown -R airflow:airflow /opt/airflow

USER airflow
EXPOSE 8080
CMD ["airflow", "api-server", "--host", "0.0.0.0", "--port", "8080"]
