"""Where every order is now, and whether it keeps Buffalo's delivery promise.

The promise is an assumption, because Buffalo's API sends none: delivery within
`promise_business_days` South African business days after the order was created
(weekends and South African public holidays, from the `holidays` package, do not count),
at the same clock time (SAST) as the order was created. "Same clock time" rather than
"end of day" keeps the promise a moment, exactly as the sandbox models Buffalo, so an
order is late when it is delivered after that moment.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from buffalo_assets.analytics._time import DAY_S, SAST, as_utc, epoch_seconds, from_epoch

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

DEFAULT_PROMISE_BUSINESS_DAYS = 10
STATUS_NOW_COLUMNS: tuple[str, ...] = (
    "order_id",
    "stage",
    "status_text",
    "created_at",
    "days_since_created",
    "days_in_stage",
    "promised_delivery_at",
    "delivered_at",
    "late_by_days",
    "is_late",
    "province",
    "weight_kg",
    "declared_value_zar",
    "duty_zar",
    "duty_status",
    "duty_paid",
    "as_of",
)


@lru_cache(maxsize=8)
def _za_holidays(first_year: int, last_year: int) -> np.ndarray:
    import holidays

    days = holidays.country_holidays("ZA", years=range(first_year, last_year + 1))
    return np.array(sorted(days), dtype="datetime64[D]")


def promised_delivery(created_at: pd.Series, business_days: int = DEFAULT_PROMISE_BUSINESS_DAYS) -> pd.Series:
    """The promised delivery moment for each creation time (NaT stays NaT).

    The N-th South African business day after the creation day (SAST), at the creation's
    clock time; an order created on a Saturday counts from the Friday, as Buffalo does.
    """
    created = pd.to_datetime(created_at, utc=True)
    result = pd.Series(pd.NaT, index=created.index, dtype="datetime64[us, UTC]")
    known = created.notna()
    if not known.any():
        return result
    local = created[known].dt.tz_convert(SAST)
    day = local.dt.normalize()
    years = local.dt.year
    holidays = _za_holidays(int(years.min()), int(years.max()) + 1)
    dates = day.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    promised_dates = np.busday_offset(dates, business_days, roll="backward", holidays=holidays)
    clock = local - day  # time of day, kept so the promise is a moment
    promised_local = (
        pd.to_datetime(pd.Series(promised_dates, index=local.index)).dt.tz_localize(SAST, ambiguous="NaT")
        + clock
    )
    result.loc[known] = promised_local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return result


def duty_paid_from_status(duty_status: pd.Series) -> pd.Series:
    """True when Buffalo says the duty is paid, False when owed and unpaid, else null."""
    text = duty_status.astype("string").str.lower()
    unpaid = text.str.contains(r"\bunpaid\b|not paid|awaiting|outstanding", regex=True)
    paid = text.str.contains(r"\bpaid\b", regex=True) & ~unpaid
    out = pd.Series(pd.NA, index=duty_status.index, dtype="boolean")
    out[paid.fillna(False).astype(bool)] = True
    out[unpaid.fillna(False).astype(bool)] = False
    return out


def order_status_now(
    clean_orders: pd.DataFrame,
    durations: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    promise_business_days: int = DEFAULT_PROMISE_BUSINESS_DAYS,
) -> pd.DataFrame:
    """One row per order: its stage now, age, promise, delivery and lateness.

    `late_by_days` is delivery minus promise for delivered orders (negative when early);
    for an order not delivered (and not cancelled) whose promise has passed it is the days
    late so far; otherwise null. `is_late` is true for both kinds of late, false for
    orders on time or not yet due, null for cancelled orders. No address column: personal
    data stays in `core`.
    """
    now = as_utc(as_of)
    now_s = now.timestamp()
    orders = clean_orders.reset_index(drop=True)
    order_id = orders["order_id"].astype(str)
    created = pd.to_datetime(orders["created_at"], utc=True)
    promised = promised_delivery(created, promise_business_days)
    delivered = pd.to_datetime(orders["delivered_at"], utc=True)
    created_s = epoch_seconds(created)
    promised_s = epoch_seconds(promised)
    # A delivery after the moment is not known yet (a replay of an earlier moment).
    delivered = delivered.where(delivered <= pd.Timestamp(now))
    delivered_s = epoch_seconds(delivered)
    stage = orders["stage"].astype(str).to_numpy()

    entered_s = np.full(len(orders), np.nan)
    if len(durations):
        last = durations.sort_values(["order_id", "stage_seq"]).drop_duplicates("order_id", keep="last")
        entered_by_order = pd.Series(epoch_seconds(last["entered_at"]), index=last["order_id"].astype(str))
        entered_s = entered_by_order.reindex(order_id).to_numpy(dtype="float64")
    entered_s = np.where(np.isnan(entered_s), created_s, entered_s)

    cancelled = stage == "cancelled"
    is_delivered = ~np.isnan(delivered_s)
    overdue = ~is_delivered & ~cancelled & (promised_s < now_s)
    late_by = np.where(
        is_delivered,
        (delivered_s - promised_s) / DAY_S,
        np.where(overdue, (now_s - promised_s) / DAY_S, np.nan),
    )
    is_late = pd.array(np.where(is_delivered, late_by > 0, overdue), dtype="boolean")
    is_late[cancelled | np.isnan(promised_s)] = pd.NA

    return pd.DataFrame(
        {
            "order_id": order_id,
            "stage": stage,
            "status_text": orders["status_text"].astype("string"),
            "created_at": created,
            "days_since_created": np.round((now_s - created_s) / DAY_S, 3),
            "days_in_stage": np.round((now_s - entered_s) / DAY_S, 3),
            "promised_delivery_at": promised,
            "delivered_at": delivered,
            "late_by_days": np.round(late_by, 3),
            "is_late": is_late,
            "province": orders["province"].astype("string"),
            "weight_kg": pd.to_numeric(orders["weight_kg"], errors="coerce").astype("float64"),
            "declared_value_zar": pd.to_numeric(orders["declared_value_zar"], errors="coerce").astype(
                "float64"
            ),
            "duty_zar": pd.to_numeric(orders["duty_zar"], errors="coerce").astype("float64"),
            "duty_status": orders["duty_status"].astype("string"),
            "duty_paid": duty_paid_from_status(orders["duty_status"]),
            "as_of": from_epoch(np.full(len(orders), now_s)),
        }
    )
