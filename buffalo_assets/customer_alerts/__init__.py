"""Customer alerts: proactive messages to Solo's customers about parcels running late.

Not to be confused with the operations team's run-failure alerts (`buffalo_assets/operations/`).
Plain Python (no Dagster):

- `rules.py`: which alerts are due (the reasons, the cool-down), from the analytics tables;
- `wording.py`: the customer-facing text of each reason, the one place to edit it;
- `sender.py`: delivery of the outbox `analytics.customer_alerts` to Solo's notification
  service (signed webhook POSTs, exactly once as far as the receiver is concerned, retries
  with backoff, giving up) and `resend_given_up`, which queues the alerts given up on again.

The Dagster side (the `customer_alerts` outbox asset, job `send_customer_alerts` and its
sensor) lives in `buffalo_assets/assets/customer_alerts.py`; the settings are the
`BUFFALO_CUSTOMER_ALERT_*` ones of `buffalo_assets/settings.py`.
"""
