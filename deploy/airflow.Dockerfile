# Airflow for the operations team's DAG, in its own image: its dependencies never mix
# with Dagster's. It reaches Dagster through DAGSTER_URL.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

RUN groupadd --system airflow && useradd --system --gid airflow --home-dir /opt/airflow airflow

WORKDIR /opt/airflow
COPY airflow/requirements.txt airflow/constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt && pip check
COPY airflow/dags ./dags
RUN chown -R airflow:airflow /opt/airflow

USER airflow
EXPOSE 8080
CMD ["airflow", "standalone"]
