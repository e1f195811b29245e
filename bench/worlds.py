"""Sandbox worlds for the delay benchmark: the tables the pipeline would build, and the hidden truth.

`world_frames` parses the order details the API would serve at a moment with the transform's
own `parse_order`, so the model sees exactly what it would see in `core`. The hidden facts
are each delay process's own (`sandbox/journeys.py`), read from the order plans the API
never shows:

* the **knowable ceiling**'s facts (`ceiling_features`): what a perfect analyst could know
  at each moment t and nothing later. Customs process: the true congestion of t's own week
  (generous: early in a week the data barely reveal it), of the parcel's arrival week once
  it has arrived, its true inspection chance and whether its inspection has shown. Backlog
  process: the true origin backlog at t and at the parcel's check-in once checked in, the
  extra days of its air shipment's transshipment once it has departed (generous: the detour
  shows only a day later), and whether its province's couriers are disrupted at t.
* the **oracle**'s facts (`oracle_features`): the parcel's own future, as planned: customs
  process: its arrival week's congestion, whether it will be inspected, how long its duty
  will stay unpaid; backlog process: its origin wait, its transshipment days, whether its
  local leg meets a disruption.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from buffalo_assets.analytics._time import epoch_seconds
from buffalo_assets.orders.parse import parse_order
from buffalo_assets.sandbox.journeys import CustomsWeeks, OriginBacklog
from buffalo_assets.sandbox.orders import DAY, OrderBook

CEILING_COLUMNS: dict[str, tuple[str, ...]] = {
    "customs": (
        "ceiling_week_congestion",
        "ceiling_arrival_congestion",
        "ceiling_inspection_p",
        "ceiling_inspected",
    ),
    "backlog": (
        "ceiling_backlog_now",
        "ceiling_backlog_at_checkin",
        "ceiling_transshipment_days",
        "ceiling_disrupted_now",
    ),
}
ORACLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customs": ("oracle_congestion", "oracle_inspected", "oracle_duty_wait_days"),
    "backlog": ("oracle_origin_wait_days", "oracle_transshipment_days", "oracle_disrupted_local"),
}


def make_book(orders: int, days: float, start: float, *, seed: int, **params: Any) -> OrderBook:
    return OrderBook(seed=seed, count=orders, start=start, history_days=days, **params)


def world_frames(book: OrderBook, now: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`core.clean_orders` and `core.order_events` as the transform would build them at `now`."""
    at = datetime.fromtimestamp(now, UTC)
    order_chunks: list[pd.DataFrame] = []
    event_chunks: list[pd.DataFrame] = []
    total = book.visible_count(now)
    for start in range(0, total, 5_000):  # chunks, so a million event dicts never live at once
        orders: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for index in range(start, min(total, start + 5_000)):
            parsed = parse_order(str(book.order_id(index)), book.detail(index, now), "bench", at)
            orders.append(parsed.order)
            events.extend(parsed.events)
        order_chunks.append(pd.DataFrame(orders))
        event_chunks.append(pd.DataFrame(events))
        book._plan.cache_clear()  # the generator's cache is not the pipeline's memory
    return pd.concat(order_chunks, ignore_index=True), pd.concat(event_chunks, ignore_index=True)


def _first(plan: Any, test: Callable[[Any], bool]) -> float:
    return next((e.at for e in plan.events if test(e)), np.nan)


def hidden_facts(book: OrderBook, now: float) -> pd.DataFrame:
    """Per order (index order_id): the hidden facts its delay process planned."""
    process = book.process
    rows = []
    for index in range(book.visible_count(now)):
        plan = book.plan(index)
        row: dict[str, Any] = {"order_id": str(plan.order_id)}
        if isinstance(process, CustomsWeeks):
            arrival = _first(plan, lambda e: e.stage == "arrived_hub")
            declared = sum(line["declaredvalue"] * line["number"] for box in plan.boxes for line in box)
            wait = (
                (plan.duty_paid_at - plan.duty_assessed_at) / DAY
                if plan.duty_paid_at is not None and plan.duty_assessed_at is not None
                else 0.0
            )
            inspection = _first(plan, lambda e: "inspection" in e.content)
            row |= {
                "arrival_s": arrival,
                "inspection_s": inspection,
                "inspection_p": 0.05 + 0.2 * (plan.weight > 10) + 0.2 * (declared > 5000),
                "oracle_congestion": process.congestion(arrival) if not np.isnan(arrival) else np.nan,
                "oracle_inspected": float(not np.isnan(inspection)),
                "oracle_duty_wait_days": wait,
            }
        elif isinstance(process, OriginBacklog):
            checkin = plan.events[1].at if len(plan.events) > 1 else np.nan
            departure = _first(plan, lambda e: e.stage == "in_transit")
            handover = plan.third_number_at if np.isfinite(plan.third_number_at) else np.nan
            detour = process.transshipment_days(departure) if not np.isnan(departure) else np.nan
            row |= {
                "province": plan.province,
                "checkin_s": checkin,
                "departure_s": departure,
                "transshipment_days": detour,
                "oracle_origin_wait_days": (departure - checkin) / DAY if not np.isnan(departure) else np.nan,
                "oracle_transshipment_days": detour,
                "oracle_disrupted_local": float(process.disrupted(plan.province, handover))
                if not np.isnan(handover)
                else np.nan,
            }
        else:
            raise ValueError(f"no hidden facts are written for the {process.name} process")
        rows.append(row)
    book._plan.cache_clear()
    return pd.DataFrame(rows).set_index("order_id")


def oracle_features(book: OrderBook, hidden: pd.DataFrame) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The oracle's columns for snapshot rows: the order's planned future, whatever the moment."""
    columns = ORACLE_COLUMNS[book.process.name]

    def add(features: pd.DataFrame) -> pd.DataFrame:
        joined = hidden.reindex(features["order_id"].astype(str).to_numpy())
        return pd.DataFrame(
            {column: joined[column].to_numpy(dtype="float64") for column in columns}, index=features.index
        )

    return add


def _per_hour(values: Callable[[float], float], moments: np.ndarray) -> np.ndarray:
    """`values` of each moment, computed once per hour (NaN for NaN)."""
    moments = np.asarray(moments, dtype="float64")
    out = np.full(len(moments), np.nan)
    known = ~np.isnan(moments)
    hours, inverse = np.unique(np.floor(moments[known] / 3600.0), return_inverse=True)
    out[known] = np.array([values(h * 3600.0) for h in hours])[inverse]
    return out


def week_congestion(book: OrderBook, moments: np.ndarray) -> np.ndarray:
    """The customs process's hidden congestion of the SAST ISO week of each moment (NaN for NaN)."""
    process = book.process
    assert isinstance(process, CustomsWeeks)
    # Weeks start on Monday 00:00 SAST = Sunday 22:00 UTC, on the hour: the hour decides the week.
    return _per_hour(process.congestion, moments)


def ceiling_features(book: OrderBook, hidden: pd.DataFrame) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The hidden facts a perfect analyst could know at each row's moment, and nothing later."""
    process = book.process

    def add(features: pd.DataFrame) -> pd.DataFrame:
        at = epoch_seconds(features["at"])
        joined = hidden.reindex(features["order_id"].astype(str).to_numpy())
        if isinstance(process, CustomsWeeks):
            arrival = joined["arrival_s"].to_numpy(dtype="float64")
            inspection = joined["inspection_s"].to_numpy(dtype="float64")
            arrived = arrival <= at  # NaN (never arrives) compares False
            facts = {
                "ceiling_week_congestion": week_congestion(book, at),
                "ceiling_arrival_congestion": week_congestion(book, np.where(arrived, arrival, np.nan)),
                "ceiling_inspection_p": joined["inspection_p"].to_numpy(dtype="float64"),
                "ceiling_inspected": (inspection <= at).astype("float64"),
            }
        else:
            assert isinstance(process, OriginBacklog)
            checkin = joined["checkin_s"].to_numpy(dtype="float64")
            departure = joined["departure_s"].to_numpy(dtype="float64")
            province = joined["province"].to_numpy()
            facts = {
                "ceiling_backlog_now": _per_hour(process.backlog_days, at),
                "ceiling_backlog_at_checkin": _per_hour(
                    process.backlog_days, np.where(checkin <= at, checkin, np.nan)
                ),
                "ceiling_transshipment_days": np.where(
                    departure <= at, joined["transshipment_days"].to_numpy(dtype="float64"), np.nan
                ),
                "ceiling_disrupted_now": np.array(
                    [
                        float(process.disrupted(p, t)) if isinstance(p, str) else np.nan
                        for p, t in zip(province, at, strict=True)
                    ]
                ),
            }
        return pd.DataFrame(facts, index=features.index)

    return add
