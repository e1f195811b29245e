"""Operations: what the operations team is told about, and the upkeep of Dagster runs.

Not to be confused with customer alerts (`buffalo_assets/customer_alerts/`), which go to
Solo's customers.

- `failure_alerts.py`: sensor `alert_on_run_failure` posts every failed run to the
  operations webhook, or logs it;
- `runs.py`: run bookkeeping that keeps the `buffalo_api` pool free: ended runs' slots are
  freed, runs whose process died are failed (sensor `release_dead_runs_sensor` in
  `definitions.py`, and `buffalo demo` before its runs).
"""
