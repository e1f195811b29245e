"""Delivery KPIs per day and per week, and late shares by province and by delay cause.

Periods are South African calendar days and ISO weeks (Monday to Sunday, SAST), because
that is how the people reading them count. An order counts as created in the period of
its creation, as delivered in the period of its delivery.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from buffalo_assets.analytics._time import DAY_S, SAST, as_utc, epoch_seconds, period_start
from buffalo_assets.analytics.stages import JOURNEY_STAGES, TERMINAL_STAGES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

# Customs first: it is where parcels wait longest and what people ask about first.
KPI_STAGES: tuple[str, ...] = ("customs", *(s for s in JOURNEY_STAGES if s != "customs"))
GRAINS = ("day", "week")
DEFAULT_STUCK_DAYS = 5.0
DELIVERY_KPI_COLUMNS: tuple[str, ...] = (
    "grain",
    "period_start",
    "orders_created",
    "orders_delivered",
    "orders_late",
    "on_time_share",
    "median_door_to_door_days",
    "p90_door_to_door_days",
    *(f"median_hours_{stage}" for stage in KPI_STAGES),
    "orders_stuck",
    "as_of",
)
LATE_SHARE_COLUMNS: tuple[str, ...] = (
    "grain",
    "period_start",
    "dimension",
    "value",
    "delivered",
    "late",
    "late_share",
)


def _period_starts(first: pd.Timestamp, last: pd.Timestamp, grain: str) -> list[date]:
    span = period_start(pd.Series([first, last]), grain)
    step = "7D" if grain == "week" else "1D"
    return list(pd.date_range(span.iloc[0], span.iloc[1], freq=step).date)


def _period_end_s(first_day: date, grain: str) -> float:
    start = pd.Timestamp(first_day).tz_localize(SAST)
    return (start + pd.Timedelta(days=7 if grain == "week" else 1)).timestamp()


def _stuck_counts(
    status_now: pd.DataFrame,
    durations: pd.DataFrame,
    events: pd.DataFrame | None,
    ends_s: np.ndarray,
    now_s: float,
    stuck_days: float,
) -> np.ndarray:
    """Orders in flight at each period end whose last event is more than N days old.

    An order is stuck over each gap between two of its events longer than N days, from
    N days into the gap until the next event; an order still travelling is stuck from N
    days after its last event until now. Counting those intervals over the sorted period
    ends is one pass, whatever the number of periods.
    """
    if events is not None and len(events):
        order = events["order_id"].astype(str).to_numpy()
        at = epoch_seconds(events["event_at"])
    else:
        order = durations["order_id"].astype(str).to_numpy()
        at = epoch_seconds(durations["entered_at"])
    keep = ~np.isnan(at) & (at <= now_s)
    frame = pd.DataFrame({"order_id": order[keep], "at": at[keep]}).sort_values(["order_id", "at"])
    order = frame["order_id"].to_numpy()
    at = frame["at"].to_numpy()
    if not len(at):
        return np.zeros(len(ends_s), dtype="int64")
    open_orders = status_now.loc[~status_now["stage"].isin(TERMINAL_STAGES), "order_id"].astype(str)
    same_next = np.r_[order[1:] == order[:-1], False]
    next_at = np.where(same_next, np.r_[at[1:], np.nan], np.nan)
    # pandas hashes; numpy's isin compares every pair for strings (object arrays).
    last_open = ~same_next & pd.Series(order).isin(open_orders).to_numpy()
    gap_end = np.where(same_next, next_at, np.where(last_open, np.inf, np.nan))
    start = at + stuck_days * DAY_S
    valid = ~np.isnan(gap_end) & (start < gap_end)
    delta = np.zeros(len(ends_s) + 1, dtype="int64")
    # A period end E counts an interval when start <= E < gap_end.
    np.add.at(delta, np.searchsorted(ends_s, start[valid], side="left"), 1)
    np.add.at(delta, np.searchsorted(ends_s, gap_end[valid], side="right"), -1)
    return np.cumsum(delta)[:-1]


def delivery_kpis(
    status_now: pd.DataFrame,
    durations: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    stuck_days: float = DEFAULT_STUCK_DAYS,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Daily and weekly delivery KPIs (columns `DELIVERY_KPI_COLUMNS`).

    `on_time_share` and the door-to-door figures are over orders delivered in the period;
    `median_hours_<stage>` over stage visits that ended in the period; `orders_stuck`
    counts orders in flight at the period's end (or now, for the current period) with no
    event for `stuck_days` days. Without `events`, stage changes stand in for events.
    """
    now = as_utc(as_of)
    now_s = now.timestamp()
    created = pd.to_datetime(status_now["created_at"], utc=True)
    delivered = pd.to_datetime(status_now["delivered_at"], utc=True)
    door_days = (epoch_seconds(delivered) - epoch_seconds(created)) / DAY_S
    closed = durations[~durations["is_open"].astype(bool) & durations["stage"].isin(KPI_STAGES)]
    rows: list[pd.DataFrame] = []
    if status_now.empty or created.isna().all():
        return pd.DataFrame(columns=list(DELIVERY_KPI_COLUMNS))
    for grain in GRAINS:
        starts = _period_starts(created.min(), now, grain)
        frame = pd.DataFrame({"period_start": starts})
        made = period_start(created.dropna(), grain).value_counts()
        delivered_mask = delivered.notna()
        got = pd.DataFrame(
            {
                "period_start": period_start(delivered[delivered_mask], grain).to_numpy(),
                "door": door_days[delivered_mask.to_numpy()],
                "late": status_now.loc[delivered_mask, "is_late"].fillna(False).astype(bool).to_numpy(),
            }
        )
        by = got.groupby("period_start")
        frame["orders_created"] = frame["period_start"].map(made).fillna(0).astype("int64")
        frame["orders_delivered"] = frame["period_start"].map(by.size()).fillna(0).astype("int64")
        frame["orders_late"] = frame["period_start"].map(by["late"].sum()).fillna(0).astype("int64")
        frame["on_time_share"] = 1 - frame["orders_late"] / frame["orders_delivered"].where(
            frame["orders_delivered"] > 0
        )
        frame["median_door_to_door_days"] = frame["period_start"].map(by["door"].median())
        frame["p90_door_to_door_days"] = frame["period_start"].map(by["door"].quantile(0.9))
        visits = pd.DataFrame(
            {
                "period_start": period_start(closed["left_at"], grain).to_numpy(),
                "stage": closed["stage"].to_numpy(),
                "hours": closed["hours"].to_numpy(dtype="float64"),
            }
        )
        medians = visits.groupby(["period_start", "stage"])["hours"].median()
        for stage in KPI_STAGES:
            per: pd.Series = (
                medians.xs(stage, level="stage")
                if stage in medians.index.get_level_values(1)
                else pd.Series(dtype="float64")
            )
            frame[f"median_hours_{stage}"] = frame["period_start"].map(per).astype("float64")
        ends = np.array([min(_period_end_s(s, grain), now_s) for s in starts])
        frame["orders_stuck"] = _stuck_counts(status_now, durations, events, ends, now_s, stuck_days)
        frame.insert(0, "grain", grain)
        rows.append(frame)
    result = pd.concat(rows, ignore_index=True)
    result["as_of"] = now
    return result[list(DELIVERY_KPI_COLUMNS)]


def typical_stage_hours(durations: pd.DataFrame) -> pd.Series:
    """Median hours of a finished visit per journey stage: what 'typical' means for causes."""
    closed = durations[~durations["is_open"].astype(bool) & durations["stage"].isin(KPI_STAGES)]
    return closed.groupby("stage")["hours"].median()


def delay_causes(status_now: pd.DataFrame, durations: pd.DataFrame) -> pd.Series:
    """The inferred cause of each late order: the stage that overran its typical time most.

    Hours of every visit to a stage are summed per order, the stage's median (over all
    finished visits) subtracted; the stage with the largest overrun is the cause, or
    'unclear' when no stage overran. Indexed by order_id, late orders only.
    """
    late_ids = status_now.loc[status_now["is_late"].fillna(False).astype(bool), "order_id"].astype(str)
    visits = durations[durations["order_id"].astype(str).isin(set(late_ids))]
    visits = visits[visits["stage"].isin(KPI_STAGES)]
    typical = typical_stage_hours(durations)
    per_stage = visits.groupby(["order_id", "stage"])["hours"].sum().reset_index()
    per_stage["overrun"] = per_stage["hours"] - per_stage["stage"].map(typical).fillna(0.0)
    best = per_stage.sort_values("overrun", ascending=False).drop_duplicates("order_id")
    cause = pd.Series(
        np.where(best["overrun"] > 0, best["stage"], "unclear"), index=best["order_id"].astype(str)
    )
    return cause.reindex(late_ids.to_numpy()).fillna("unclear")


WEIGHT_BANDS = ((2.0, "<2 kg"), (10.0, "2-10 kg"), (20.0, "10-20 kg"), (float("inf"), ">20 kg"))


def weight_band(weight: pd.Series) -> pd.Series:
    """Each weight's band (`WEIGHT_BANDS`), `not weighed` without a weight."""
    kg = pd.to_numeric(weight, errors="coerce").to_numpy(dtype="float64")
    bands = np.full(len(kg), "not weighed", dtype=object)
    lower = 0.0
    for upper, name in WEIGHT_BANDS:
        bands[(kg >= lower) & (kg < upper)] = name
        lower = upper
    return pd.Series(bands, index=weight.index)


def late_share_by(status_now: pd.DataFrame, durations: pd.DataFrame) -> pd.DataFrame:
    """Late share of delivered orders per period, by province, weight band and delay cause (long format).

    For `dimension` 'province' and 'weight_band' the shares are within the slice; for 'cause'
    the denominator is every order delivered in the period, so the causes of a period add up
    to its late share.
    """
    delivered = status_now[status_now["delivered_at"].notna()].copy()
    if delivered.empty:
        return pd.DataFrame(columns=list(LATE_SHARE_COLUMNS))
    delivered["late"] = delivered["is_late"].fillna(False).astype(bool)
    delivered["order_id"] = delivered["order_id"].astype(str)
    causes = delay_causes(status_now, durations)
    delivered["cause"] = delivered["order_id"].map(causes)
    rows = []
    for grain in GRAINS:
        delivered["period_start"] = period_start(delivered["delivered_at"], grain).to_numpy()
        province = (
            delivered.assign(value=delivered["province"].fillna("unknown").astype(str))
            .groupby(["period_start", "value"])
            .agg(delivered=("late", "size"), late=("late", "sum"))
            .reset_index()
        )
        province["dimension"] = "province"
        band = (
            delivered.assign(value=weight_band(delivered["weight_kg"]))
            .groupby(["period_start", "value"])
            .agg(delivered=("late", "size"), late=("late", "sum"))
            .reset_index()
        )
        band["dimension"] = "weight_band"
        totals = delivered.groupby("period_start")["late"].size()
        cause = (
            delivered[delivered["late"]]
            .assign(value=lambda f: f["cause"].astype(str))
            .groupby(["period_start", "value"])
            .size()
            .rename("late")
            .reset_index()
        )
        cause["delivered"] = cause["period_start"].map(totals)
        cause["dimension"] = "cause"
        both = pd.concat([province, band, cause], ignore_index=True)
        both["grain"] = grain
        rows.append(both)
    result = pd.concat(rows, ignore_index=True)
    result["delivered"] = result["delivered"].astype("int64")
    result["late"] = result["late"].astype("int64")
    result["late_share"] = result["late"] / result["delivered"]
    return (
        result[list(LATE_SHARE_COLUMNS)]
        .sort_values(["grain", "period_start", "dimension", "value"])
        .reset_index(drop=True)
    )
