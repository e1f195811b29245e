"""Realized accuracy: what the predictions and alerts of each week said, against how orders ended.

The calls of a week are read from the prediction history (`analytics.delay_predictions`):
per order, week (ISO, SAST, of the prediction) and model, the order counts as called at
risk when any of its predictions that week said `at_risk`, and its week's last p_late is
the one the Brier score judges. Only predictions made before the order's promise count (a
parcel past its promise is late by definition, and would flatter the figures).

An order has ended when it was delivered, or when its promise passed undelivered (it is then
late whatever happens next); orders still on their way are counted in `orders` but not
judged. Cancelled orders never end. For the alerts, the at_risk customer alerts sent in a
week are judged the same way: an alerted parcel that arrived on time is a false alarm.

Slices: every figure for all orders, per province and per weight band.

A week's figures are final once every promise of its predictions has passed (an order not
delivered by its promise is late, whatever happens next): only the weeks that may still
change (`open_weeks`) are computed again, their rows replaced in one transaction; older weeks stay
as they were, also after the prediction history they came from is pruned.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics.kpis import weight_band

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "week_start",
    "model_version",
    "source",
    "dimension",
    "value",
    "orders",
    "ended",
    "late",
    "flagged",
    "true_alarms",
    "false_alarms",
    "precision",
    "recall",
    "brier",
    "computed_at",
)
DIMENSIONS = ("all", "province", "weight_band")
# Below this many ended orders called at risk in a week, its precision is too uncertain to
# ask for a retraining.
MIN_FLAGGED_FOR_REQUEST = 20
# ... and only a week whose orders have (nearly) all ended: cancelled ones never end.
JUDGED_SHARE = 0.95

# Per order, week and model: called at risk that week, the week's last p_late, and the outcome.
# A prediction is in force from its row until the order's next row, so a week's calls are the
# rows made in it plus, for each order, the row in force when the week began (if its promise
# had not passed by then). Rows before the promise only; nothing after :as_of.
CALLS_SQL = """
WITH weeks AS (
    SELECT week_start::date AS week_start,
           week_start::timestamp AT TIME ZONE 'Africa/Johannesburg' AS starts,
           (week_start + interval '7 days')::timestamp AT TIME ZONE 'Africa/Johannesburg' AS ends
    FROM generate_series(CAST(:first_week AS date), CAST(:last_week AS date), interval '7 days') AS week_start
),
in_force AS (
    SELECT w.week_start, p.order_id, p.model_version, p.at_risk, p.p_late, p.scored_at
    FROM weeks w
    JOIN analytics.delay_predictions p
      ON p.scored_at >= w.starts AND p.scored_at < w.ends AND p.scored_at <= :as_of
     AND (p.promised_delivery_at IS NULL OR p.scored_at < p.promised_delivery_at)
    UNION ALL
    SELECT w.week_start, c.order_id, c.model_version, c.at_risk, c.p_late, c.scored_at
    FROM weeks w
    CROSS JOIN LATERAL (
        SELECT DISTINCT ON (order_id) order_id, model_version, at_risk, p_late, scored_at,
               promised_delivery_at
        FROM analytics.delay_predictions
        WHERE scored_at < w.starts AND scored_at >= w.starts - CAST(:carry AS interval)
        ORDER BY order_id, scored_at DESC
    ) c
    WHERE c.promised_delivery_at > w.starts AND w.starts <= :as_of
),
calls AS (
    SELECT week_start, order_id, model_version,
           bool_or(at_risk) AS flagged,
           (array_agg(p_late ORDER BY scored_at DESC))[1] AS p_late
    FROM in_force
    GROUP BY 1, 2, 3
)
SELECT c.order_id, c.model_version, c.week_start, c.flagged, c.p_late,
       s.is_late, s.delivered_at, s.province, s.weight_kg
FROM calls c LEFT JOIN analytics.order_status_now s USING (order_id)
"""
# The at_risk alerts sent, with the model whose prediction was in force when each was made.
ALERTS_SQL = """
SELECT a.order_id,
       coalesce(p.model_version, 'unknown') AS model_version,
       date_trunc('week', a.created_at AT TIME ZONE 'Africa/Johannesburg')::date AS week_start,
       true AS flagged, NULL::double precision AS p_late,
       s.is_late, s.delivered_at, s.province, s.weight_kg
FROM analytics.customer_alerts a
LEFT JOIN analytics.order_status_now s USING (order_id)
LEFT JOIN LATERAL (
    SELECT model_version FROM analytics.delay_predictions d
    WHERE d.order_id = a.order_id AND d.scored_at <= a.created_at
    ORDER BY d.scored_at DESC LIMIT 1
) p ON true
WHERE a.reason = 'at_risk' AND a.sent_at IS NOT NULL AND a.created_at >= :since
  AND a.created_at <= :as_of
"""


def realized(calls: pd.DataFrame, source: str, computed_at: pd.Timestamp) -> pd.DataFrame:
    """Per week, model and slice: counts, precision, recall and Brier score of `calls`."""
    if not len(calls):
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    frame = calls.copy()
    is_late = frame["is_late"].astype("boolean")
    frame["ended"] = (frame["delivered_at"].notna() | is_late.fillna(False)).astype(bool) & is_late.notna()
    frame["late_"] = frame["ended"] & is_late.fillna(False).astype(bool)
    frame["flag_"] = frame["ended"] & frame["flagged"].astype(bool)
    frame["hit"] = frame["flag_"] & frame["late_"]
    frame["miss"] = frame["flag_"] & ~frame["late_"]
    p = pd.to_numeric(frame["p_late"], errors="coerce")
    frame["sq"] = np.where(frame["ended"] & p.notna(), (p - frame["late_"].astype(float)) ** 2, np.nan)
    frame["all"] = "all"
    frame["province"] = frame["province"].fillna("unknown").astype(str)
    frame["weight_band"] = weight_band(frame["weight_kg"])
    parts = []
    for dimension in DIMENSIONS:
        grouped = frame.groupby(["week_start", "model_version", dimension], dropna=False)
        part = grouped.agg(
            orders=("order_id", "nunique"),
            ended=("ended", "sum"),
            late=("late_", "sum"),
            flagged=("flag_", "sum"),
            true_alarms=("hit", "sum"),
            false_alarms=("miss", "sum"),
            brier=("sq", "mean"),
        ).reset_index()
        part = part.rename(columns={dimension: "value"})
        part["dimension"] = dimension
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["precision"] = np.where(
            out["flagged"] > 0, out["true_alarms"] / out["flagged"].clip(lower=1), np.nan
        )
        recall = np.where(out["late"] > 0, out["true_alarms"] / out["late"].clip(lower=1), np.nan)
    out["recall"] = recall if source == "model" else np.nan
    if source != "model":
        out["brier"] = np.nan
    out["source"] = source
    out["computed_at"] = computed_at
    for column in ("orders", "ended", "late", "flagged", "true_alarms", "false_alarms"):
        out[column] = out[column].astype("int64")
    return out[list(PERFORMANCE_COLUMNS)].sort_values(
        ["week_start", "model_version", "source", "dimension", "value"]
    )


def open_weeks(promise_business_days: int) -> int:
    """Weeks whose figures may still change (`settings.open_weeks`)."""
    from buffalo_assets.settings import open_weeks as weeks

    return weeks(promise_business_days)


def since(as_of: datetime, promise_business_days: int) -> datetime:
    """Monday 00:00 SAST of the oldest week computed again (`open_weeks` before `as_of`'s)."""
    local = pd.Timestamp(as_of).tz_convert("Africa/Johannesburg")
    monday = (local - pd.Timedelta(days=local.weekday())).normalize()
    return (
        (monday - pd.Timedelta(weeks=open_weeks(promise_business_days) - 1)).tz_convert("UTC").to_pydatetime()
    )


def query_parameters(as_of: datetime, promise_business_days: int) -> dict[str, Any]:
    """The bind parameters of CALLS_SQL and ALERTS_SQL for the open weeks up to `as_of`."""
    start = since(as_of, promise_business_days)
    local = pd.Timestamp(as_of).tz_convert("Africa/Johannesburg")
    return {
        "since": start,
        "first_week": pd.Timestamp(start).tz_convert("Africa/Johannesburg").date(),
        "last_week": (local - pd.Timedelta(days=local.weekday())).date(),
        "as_of": as_of,
        # How far back a row can still be in force: its promise is at most this much later.
        "carry": f"{open_weeks(promise_business_days) * 7} days",
    }


def low_precision(performance: pd.DataFrame, champion: str | None, minimum: float) -> str | None:
    """Why a retraining is asked for, when the champion's newest judged week (at least
    `MIN_FLAGGED_FOR_REQUEST` ended at-risk calls, `JUDGED_SHARE` of its orders ended) fell
    below `minimum`."""
    if champion is None or not len(performance):
        return None
    mine = performance[
        (performance["model_version"] == champion)
        & (performance["source"] == "model")
        & (performance["dimension"] == "all")
        & (performance["flagged"] >= MIN_FLAGGED_FOR_REQUEST)
        # A week still under way judges only its orders that ended early: a biased few.
        & (performance["ended"] >= JUDGED_SHARE * performance["orders"])
    ]
    if not len(mine):
        return None
    newest = mine.sort_values("week_start").iloc[-1]
    if newest["precision"] < minimum:
        return (
            f"realized precision {newest['precision']:.2f} in the week of {newest['week_start']} "
            f"({newest['true_alarms']} of {newest['flagged']} at-risk calls late), below {minimum:.2f}"
        )
    return None
