"""Which customer alerts are due: the rules of the `analytics.customer_alerts` outbox.

An alert is one order and one reason, at most once ever:

- `late`: in flight (not delivered, returned, cancelled or lost) and past its promise;
- `stuck`: in flight with no tracking event for `stuck_days` days;
- `at_risk`: in flight, not yet late, and `at_risk` in `analytics.order_delay_risk`;
- `duty_unpaid`: in customs with its duty/VAT owed and unpaid (the customer can act);
- `delivered_after_delay`: delivered after its promise, within the last
  `RECENT_DELIVERY_DAYS` days (so that a first run over months of history does not thank
  customers for parcels they received long ago).

The cool-down: since a row per order and reason is kept forever, the delay family (late,
stuck, at_risk) shares one cool-down per order: no delay alert is created within
`cooldown_hours` of that order's previous delay alert, and at most one per run (late
before stuck before at_risk). A condition that still holds after the cool-down is alerted
by a later run. `duty_unpaid` and `delivered_after_delay` are exempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics._time import DAY_S, HOUR_S, SAST, as_utc, epoch_seconds
from buffalo_assets.analytics.stages import TERMINAL_STAGES
from buffalo_assets.customer_alerts.wording import render

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

# Within a run, the first that holds is the one alerted.
DELAY_REASONS: tuple[str, ...] = ("late", "stuck", "at_risk")
EXEMPT_REASONS: tuple[str, ...] = ("duty_unpaid", "delivered_after_delay")
REASONS: tuple[str, ...] = (*DELAY_REASONS, *EXEMPT_REASONS)
RECENT_DELIVERY_DAYS = 3.0
ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "order_id",
    "reason",
    "expressnumber",
    "detail",
    "message",
    "created_at",
)


def alert_id(order_id: str, reason: str) -> str:
    """Stable per order and reason: the same alert always has the same Idempotency-Key."""
    return f"{order_id}:{reason}"


@dataclass
class DueAlerts:
    """The new alerts of a run, and what the rules held back."""

    alerts: pd.DataFrame
    conditions: dict[str, int] = field(default_factory=dict)
    already_alerted: int = 0
    cooling_down: int = 0


def _local_date(seconds: float) -> str | None:
    if not np.isfinite(seconds):
        return None
    return pd.Timestamp(seconds, unit="s", tz="UTC").tz_convert(SAST).date().isoformat()


def _rounded(value: float, digits: int = 1) -> float | None:
    return round(float(value), digits) if np.isfinite(value) else None


def due_alerts(
    status: pd.DataFrame,
    risk: pd.DataFrame,
    tracking: pd.DataFrame,
    last_events: pd.DataFrame,
    previous: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    *,
    stuck_days: float,
    cooldown_hours: float,
) -> DueAlerts:
    """The alerts to add to the outbox now.

    `status`: analytics.order_status_now (order_id, stage, promised_delivery_at,
    delivered_at, late_by_days, is_late, duty_paid, duty_zar); `risk`:
    analytics.order_delay_risk (order_id, at_risk, p_late, expected_delivery_at);
    `tracking`: order_id, tracking_number; `last_events`: order_id, last_event_at;
    `previous`: the outbox's order_id, reason, created_at.
    """
    now_s = as_utc(as_of).timestamp()
    orders = status.drop_duplicates("order_id")
    orders = orders.set_index(orders["order_id"].astype(str).to_numpy())
    index = orders.index

    def column(frame: pd.DataFrame, name: str) -> pd.Series:
        keyed = frame.drop_duplicates("order_id")
        keyed = keyed.set_index(keyed["order_id"].astype(str).to_numpy())
        return keyed[name].reindex(index) if name in keyed else pd.Series(np.nan, index=index)

    stage = orders["stage"].astype(str)
    promised_s = epoch_seconds(orders["promised_delivery_at"])
    delivered_s = epoch_seconds(orders["delivered_at"])
    late_by = pd.to_numeric(orders["late_by_days"], errors="coerce").to_numpy(dtype="float64")
    duty = pd.to_numeric(orders["duty_zar"], errors="coerce").to_numpy(dtype="float64")
    is_late = orders["is_late"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    duty_paid = orders["duty_paid"].astype("boolean")
    at_risk = column(risk, "at_risk").astype("boolean").fillna(False).to_numpy(dtype=bool)
    p_late = pd.to_numeric(column(risk, "p_late"), errors="coerce").to_numpy(dtype="float64")
    expected_s = epoch_seconds(column(risk, "expected_delivery_at"))
    last_event_s = epoch_seconds(column(last_events, "last_event_at"))
    quiet_days = (now_s - last_event_s) / DAY_S
    in_flight = ~stage.isin(TERMINAL_STAGES).to_numpy()

    holds = {
        "late": in_flight & is_late,
        "stuck": in_flight & (quiet_days >= stuck_days),
        "at_risk": in_flight & ~is_late & at_risk,
        "duty_unpaid": (stage == "customs").to_numpy()
        & duty_paid.eq(False).fillna(False).to_numpy(dtype=bool),
        "delivered_after_delay": (stage == "delivered").to_numpy()
        & (late_by > 0)
        & ((now_s - delivered_s) / DAY_S <= RECENT_DELIVERY_DAYS),
    }
    done = set(zip(previous["order_id"].astype(str), previous["reason"].astype(str), strict=True))
    delay_before = previous[previous["reason"].isin(DELAY_REASONS)]
    last_delay_s = (
        pd.Series(
            epoch_seconds(delay_before["created_at"]), index=delay_before["order_id"].astype(str).to_numpy()
        )
        .groupby(level=0)
        .max()
    )
    cooling = set(last_delay_s[(now_s - last_delay_s) < cooldown_hours * HOUR_S].index)

    result = DueAlerts(alerts=pd.DataFrame(columns=list(ALERT_COLUMNS)))
    chosen: list[tuple[int, str]] = []
    delay_taken: set[str] = set()
    for reason in REASONS:
        positions = np.flatnonzero(holds[reason])
        result.conditions[reason] = len(positions)
        for position in positions.tolist():
            order_id = str(index[position])
            if (order_id, reason) in done:
                result.already_alerted += 1
                continue
            if reason in DELAY_REASONS:
                if order_id in cooling:
                    result.cooling_down += 1
                    continue
                if order_id in delay_taken:
                    continue
                delay_taken.add(order_id)
            chosen.append((position, reason))
    if not chosen:
        return result

    tracking_numbers = column(tracking, "tracking_number")
    rows: list[dict[str, Any]] = []
    for position, reason in chosen:
        order_id = str(index[position])
        detail = {
            "stage": stage.iloc[position],
            "promised_date": _local_date(promised_s[position]),
            "days_late": _rounded(late_by[position]) if late_by[position] > 0 else None,
            "expected_date": _local_date(expected_s[position]),
            "p_late": _rounded(p_late[position], 3),
            "days_without_event": _rounded(quiet_days[position]),
            "delivered_date": _local_date(delivered_s[position]),
            "duty_zar": _rounded(duty[position], 2) if reason == "duty_unpaid" else None,
        }
        detail = {k: v for k, v in detail.items() if v is not None}
        number = tracking_numbers.iloc[position]
        number = str(number) if isinstance(number, str) and number else None
        rows.append(
            {
                "alert_id": alert_id(order_id, reason),
                "order_id": order_id,
                "reason": reason,
                "expressnumber": number,
                "detail": json.dumps(detail, sort_keys=True),
                "message": render(reason, number, detail),
                "created_at": as_utc(as_of),
            }
        )
    result.alerts = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
    return result
