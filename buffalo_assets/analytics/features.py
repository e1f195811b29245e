"""Delay-model features as they were known at a moment: no outcome, no future event.

Everything starts from `History` (the orders and their events, read once). A feature of
order o at moment t uses only o's events at or before t, o's static attributes (province,
declared value, weight) and what other parcels' events up to t say about customs right
now ("the recent past"). Appending events after t never changes it
(`tests/test_analytics_core.py` checks exactly that).

Recent past, from customs visits (a parcel entering customs = arriving at the hub):
`cohort_*` describe parcels that reached customs in the same SAST calendar week as this
one (or, before it gets there, this week's arrivals), `recent_*` those of the last 7 days:
how many, the share still held, and the share released within 36/72/120 hours among those
that have been there that long (a censoring-free measure of how fast customs is now).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from buffalo_assets.analytics._time import DAY_S, HOUR_S, SAST, as_utc, epoch_seconds, from_epoch
from buffalo_assets.analytics.stages import STAGES, TERMINAL_STAGES
from buffalo_assets.analytics.status import DEFAULT_PROMISE_BUSINESS_DAYS, promised_delivery

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

PROVINCES: tuple[str, ...] = (
    "Gauteng",
    "Western Cape",
    "KwaZulu-Natal",
    "Eastern Cape",
    "Free State",
    "Limpopo",
    "Mpumalanga",
    "Northern Cape",
    "North West",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("stage_code", "province_code")
FEATURE_COLUMNS: tuple[str, ...] = (
    "stage_code",
    "province_code",
    "age_hours",
    "hours_in_stage",
    "hours_to_promise",
    "visits_so_far",
    "weekday",
    "created_weekday",
    "weight_kg",
    "declared_value_zar",
    "duty_state",
    "duty_owed_zar",
    "hours_duty_unpaid",
    "inspected",
    "failed_attempt",
    "hours_since_customs_entry",
    "cohort_arrivals",
    "cohort_open_share",
    "cohort_released_36h",
    "cohort_released_72h",
    "cohort_released_120h",
    "recent_arrivals",
    "recent_open_share",
    "recent_released_36h",
    "recent_released_72h",
    "recent_released_120h",
    "hours_to_customs",
    "customs_weeks_ahead",
    "cohort_plain_arrivals",
    "cohort_plain_open_share",
    "cohort_plain_released_24h",
    "cohort_plain_released_36h",
    "cohort_plain_released_48h",
    "cohort_plain_released_72h",
    "cohort_plain_dwell_hours",
    "recent_plain_released_36h",
    "recent_plain_released_72h",
    "recent_plain_dwell_hours",
)
KEY_COLUMNS: tuple[str, ...] = ("order_id", "at", "promised_delivery_at")
GRID_S = 6 * HOUR_S  # recent-past figures are computed on a 6-hour grid (never after t)
RECENT_S = 7 * DAY_S
# A parcel spends at least ~20 hours in customs; these spans separate a quiet week from a congested one.
RELEASED_WITHIN_HOURS = (36, 72, 120)
# "Plain" parcels: in customs with no inspection and no duty known (so far); their dwell is
# customs' own pace, without the waits that belong to one parcel.
PLAIN_RELEASED_WITHIN_HOURS = (24, 36, 48, 72)
# Stages an order passes before customs, whose typical lead time to customs is measured.
PRE_CUSTOMS_STAGES: tuple[str, ...] = ("processing", "dispatched", "in_transit", "arrived_hub")
LEAD_WINDOW_S = 14 * DAY_S  # lead times to customs: from customs arrivals of the last 14 days

_INSPECTED = re.compile(r"inspect", re.IGNORECASE)
_DUTY = re.compile(r"\bdut(y|ies)\b|\bvat\b", re.IGNORECASE)
_ASSESSED = re.compile(r"assess|awaiting|owed|\bdue\b|payable", re.IGNORECASE)
_PAID = re.compile(r"\bpaid\b", re.IGNORECASE)
_FAILED = re.compile(r"attempt failed|failed delivery|not available|unsuccessful", re.IGNORECASE)
_AMOUNT = re.compile(r"R\s?(\d[\d,]*(?:\.\d+)?)")


@dataclass
class History:
    """Orders and their stage visits as arrays, built once and queried at many moments."""

    as_of_s: float
    order_ids: np.ndarray
    created_s: np.ndarray
    promise_s: np.ndarray
    delivered_s: np.ndarray
    end_s: np.ndarray  # when a terminal stage was reached (NaN while travelling)
    final_stage: np.ndarray  # stage at as_of (last event's), processing before any event
    weight: np.ndarray
    declared: np.ndarray
    province_code: np.ndarray
    visit_order: np.ndarray  # visits sorted by (order position, entered)
    visit_entered: np.ndarray
    visit_stage: np.ndarray  # index into STAGES
    first_visit: np.ndarray  # per order: index of its first visit (or -1)
    inspected_s: np.ndarray
    duty_assessed_s: np.ndarray
    duty_paid_s: np.ndarray
    duty_owed: np.ndarray
    failed_s: np.ndarray
    customs_entered_s: np.ndarray  # per order: first customs visit
    customs_in: np.ndarray  # customs visits of all orders, sorted by entry
    customs_out: np.ndarray  # matching release (inf while held)
    customs_order: np.ndarray  # matching order position
    # per order: first entry of each of PRE_CUSTOMS_STAGES (processing: creation)
    stage_first_s: np.ndarray

    @property
    def size(self) -> int:
        return len(self.order_ids)


def _first_time(order_pos: np.ndarray, at: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf)
    np.minimum.at(out, order_pos[mask], at[mask])
    out[np.isinf(out)] = np.nan
    return out


def _flags(descriptions: pd.Series) -> pd.DataFrame:
    """Flags and duty amounts per distinct event text (few distinct texts, many events)."""
    unique = pd.Series(descriptions.dropna().unique(), dtype="object")
    duty = unique.map(lambda s: bool(_DUTY.search(s)))
    amount = unique.map(lambda s: _AMOUNT.search(s))
    return pd.DataFrame(
        {
            "inspected": unique.map(lambda s: bool(_INSPECTED.search(s))).to_numpy(),
            "assessed": (duty & unique.map(lambda s: bool(_ASSESSED.search(s)))).to_numpy(),
            "paid": (
                duty & unique.map(lambda s: bool(_PAID.search(s)) and not _ASSESSED.search(s))
            ).to_numpy(),
            "failed": unique.map(lambda s: bool(_FAILED.search(s))).to_numpy(),
            "amount": amount.map(lambda m: float(m.group(1).replace(",", "")) if m else np.nan).to_numpy(),
        },
        index=unique.to_numpy(),
    )


def _stage_at_end(visit_order: np.ndarray, visit_stage: np.ndarray, n: int) -> np.ndarray:
    codes = np.full(n, STAGES.index("processing"))
    last = np.r_[visit_order[1:] != visit_order[:-1], True] if len(visit_order) else np.array([], bool)
    codes[visit_order[last]] = visit_stage[last]
    return np.asarray(STAGES, dtype=object)[codes]


def build_history(
    clean_orders: pd.DataFrame,
    events: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    promise_business_days: int = DEFAULT_PROMISE_BUSINESS_DAYS,
) -> History:
    """Index `core.clean_orders` and `core.order_events` for as-of feature queries.

    Events after `as_of` or without a time are ignored. Orders without a creation time
    cannot have a promise and are left out.
    """
    now_s = as_utc(as_of).timestamp()
    created_all = pd.to_datetime(clean_orders["created_at"], utc=True)
    # Orders created after as_of do not exist yet; stages come from events up to as_of, so
    # a history can be taken "as of" an earlier moment from later tables.
    orders = clean_orders[created_all.notna() & (created_all <= pd.Timestamp(now_s, unit="s", tz="UTC"))]
    orders = orders.reset_index(drop=True)
    ids = orders["order_id"].astype(str).to_numpy()
    n = len(ids)
    position = pd.Series(np.arange(n), index=ids)
    created = pd.to_datetime(orders["created_at"], utc=True)
    delivered_s = epoch_seconds(orders["delivered_at"])
    delivered_s[delivered_s > now_s] = np.nan

    at = epoch_seconds(events["event_at"]) if len(events) else np.empty(0)
    pos = position.reindex(events["order_id"].astype(str)).to_numpy(dtype="float64") if len(events) else at
    keep = ~np.isnan(at) & (at <= now_s) & ~np.isnan(pos)
    ev = pd.DataFrame(
        {
            "pos": pos[keep].astype("int64"),
            "at": at[keep],
            "stage": events["stage"].to_numpy()[keep] if len(events) else [],
            "description": events["description"].to_numpy()[keep] if len(events) else [],
        }
    ).sort_values(["pos", "at"], kind="stable")
    ev_pos = ev["pos"].to_numpy()
    ev_at = ev["at"].to_numpy()
    stage_index = {stage: i for i, stage in enumerate(STAGES)}
    ev_stage = ev["stage"].map(stage_index).fillna(stage_index["unknown"]).to_numpy(dtype="int64")

    new_visit = np.r_[True, (ev_pos[1:] != ev_pos[:-1]) | (ev_stage[1:] != ev_stage[:-1])] if len(ev) else []
    starts = np.flatnonzero(new_visit)
    visit_order = ev_pos[starts]
    visit_entered = ev_at[starts]
    visit_stage = ev_stage[starts]
    first_visit = np.full(n, -1, dtype="int64")
    firsts = np.r_[True, visit_order[1:] != visit_order[:-1]] if len(starts) else np.array([], bool)
    first_visit[visit_order[firsts]] = np.flatnonzero(firsts)
    next_same = np.r_[visit_order[1:] == visit_order[:-1], False] if len(starts) else np.array([], bool)
    visit_left = np.where(next_same, np.r_[visit_entered[1:], np.inf] if len(starts) else [], np.inf)

    terminal_codes = [stage_index[s] for s in TERMINAL_STAGES]
    terminal_visit = np.isin(visit_stage, terminal_codes)
    end_s = _first_time(visit_order, visit_entered, terminal_visit, n)

    customs = visit_stage == stage_index["customs"]
    customs_entered_s = _first_time(visit_order, visit_entered, customs, n)
    order_by_entry = np.argsort(visit_entered[customs], kind="stable")
    customs_in = visit_entered[customs][order_by_entry]
    customs_out = visit_left[customs][order_by_entry]
    customs_order = visit_order[customs][order_by_entry]
    created_s = epoch_seconds(created)
    stage_first_s = (
        np.column_stack(
            [
                created_s
                if stage == "processing"
                else _first_time(visit_order, visit_entered, visit_stage == stage_index[stage], n)
                for stage in PRE_CUSTOMS_STAGES
            ]
        )
        if n
        else np.empty((0, len(PRE_CUSTOMS_STAGES)))
    )

    flags = _flags(ev["description"])
    desc = ev["description"]
    looked = flags.reindex(desc.to_numpy())
    inspected = looked["inspected"].fillna(False).to_numpy(dtype=bool)
    assessed = looked["assessed"].fillna(False).to_numpy(dtype=bool)
    paid = looked["paid"].fillna(False).to_numpy(dtype=bool)
    failed = looked["failed"].fillna(False).to_numpy(dtype=bool)
    duty_owed = np.full(n, np.nan)
    amounts = looked["amount"].to_numpy(dtype="float64")
    with_amount = assessed & ~np.isnan(amounts)
    duty_owed[ev_pos[with_amount]] = amounts[with_amount]

    province = orders["province"].astype("string")
    province_code = (
        province.map({p: float(i) for i, p in enumerate(PROVINCES)})
        .astype("float64")
        .to_numpy(na_value=np.nan)
    )
    return History(
        as_of_s=now_s,
        order_ids=ids,
        created_s=created_s,
        promise_s=epoch_seconds(promised_delivery(created, promise_business_days)),
        delivered_s=delivered_s,
        end_s=end_s,
        final_stage=_stage_at_end(visit_order, visit_stage, n),
        weight=pd.to_numeric(orders["weight_kg"], errors="coerce").to_numpy(dtype="float64"),
        declared=pd.to_numeric(orders["declared_value_zar"], errors="coerce").to_numpy(dtype="float64"),
        province_code=province_code,
        visit_order=visit_order,
        visit_entered=visit_entered,
        visit_stage=visit_stage,
        first_visit=first_visit,
        inspected_s=_first_time(ev_pos, ev_at, inspected, n),
        duty_assessed_s=_first_time(ev_pos, ev_at, assessed, n),
        duty_paid_s=_first_time(ev_pos, ev_at, paid, n),
        duty_owed=duty_owed,
        failed_s=_first_time(ev_pos, ev_at, failed, n),
        customs_entered_s=customs_entered_s,
        customs_in=customs_in,
        customs_out=customs_out,
        customs_order=customs_order,
        stage_first_s=stage_first_s,
    )


def _week_start_s(moments: np.ndarray) -> np.ndarray:
    """Epoch seconds of the SAST Monday 00:00 starting the week of each moment."""
    local = from_epoch(moments).dt.tz_convert(SAST)
    monday = local.dt.normalize() - pd.to_timedelta(local.dt.weekday, unit="D")
    return epoch_seconds(monday)


def _customs_figures(history: History, lower: float, upper: float, now: float) -> tuple[float, ...]:
    """Arrivals in customs in [lower, min(upper, now)), seen at `now`: count, share held, released shares."""
    i = np.searchsorted(history.customs_in, lower, side="left")
    j = np.searchsorted(history.customs_in, min(upper, now), side="left")
    entered = history.customs_in[i:j]
    released = history.customs_out[i:j]
    count = len(entered)
    if not count:
        return (0.0, np.nan, np.nan, np.nan, np.nan)
    held = released > now
    shares = []
    for hours in RELEASED_WITHIN_HOURS:
        old = entered <= now - hours * HOUR_S
        shares.append(float(((released - entered)[old] <= hours * HOUR_S).mean()) if old.any() else np.nan)
    return (float(count), float(held.mean()), *shares)


PLAIN_NAMES: tuple[str, ...] = (
    "arrivals",
    "open_share",
    *(f"released_{hours}h" for hours in PLAIN_RELEASED_WITHIN_HOURS),
    "dwell_hours",
)


def _kaplan_meier(held_s: np.ndarray, released: np.ndarray, spans_s: tuple[float, ...]) -> tuple[float, ...]:
    """Kaplan-Meier: share released within each span, and the median hours held.

    `held_s` is each parcel's time in customs so far (to its release, or to now while still
    held: censored), `released` whether it was released. A share is NaN where no parcel has
    been watched that long; the median is NaN until the estimate falls to one half.
    """
    order = np.argsort(held_s, kind="stable")
    held = held_s[order]
    at_risk = len(held) - np.arange(len(held))
    survival = np.cumprod(np.where(released[order], 1.0 - 1.0 / at_risk, 1.0))
    shares = []
    for span in spans_s:
        if not len(held) or held[-1] < span:
            shares.append(np.nan)
            continue
        k = np.searchsorted(held, span, side="right")
        shares.append(float(1.0 - survival[k - 1]) if k else 0.0)
    below = np.flatnonzero(survival <= 0.5)
    median = float(held[below[0]]) / HOUR_S if len(below) else np.nan
    return (*shares, median)


def _plain_figures(history: History, lower: float, upper: float, now: float) -> tuple[float, ...]:
    """Like `_customs_figures`, over the arrivals with no inspection and no duty known at `now`.

    The released-within shares and the median hours in customs are Kaplan-Meier estimates
    over every such arrival, those still held counted as censored at their time so far.
    """
    h = history
    i = np.searchsorted(h.customs_in, lower, side="left")
    j = np.searchsorted(h.customs_in, min(upper, now), side="left")
    orders = h.customs_order[i:j]
    plain = ~(h.inspected_s[orders] <= now) & ~(h.duty_assessed_s[orders] <= now)
    entered = h.customs_in[i:j][plain]
    released = h.customs_out[i:j][plain]
    count = len(entered)
    if not count:
        return (0.0, *([np.nan] * (len(PLAIN_NAMES) - 1)))
    out = released <= now
    spans = tuple(hours * HOUR_S for hours in PLAIN_RELEASED_WITHIN_HOURS)
    estimates = _kaplan_meier(np.minimum(released, now) - entered, out, spans)
    return (float(count), float((~out).mean()), *estimates)


def _lead_to_customs(history: History, now: float) -> np.ndarray:
    """Median seconds from first entering each of PRE_CUSTOMS_STAGES to reaching customs.

    Over the customs arrivals of the last `LEAD_WINDOW_S` before `now` (NaN where none).
    """
    h = history
    i = np.searchsorted(h.customs_in, now - LEAD_WINDOW_S, side="left")
    j = np.searchsorted(h.customs_in, now, side="left")
    if j <= i:
        return np.full(len(PRE_CUSTOMS_STAGES), np.nan)
    lead = h.customs_in[i:j, None] - h.stage_first_s[h.customs_order[i:j]]
    lead[~(lead >= 0)] = np.nan
    out = np.full(len(PRE_CUSTOMS_STAGES), np.nan)
    for k in range(len(PRE_CUSTOMS_STAGES)):
        column = lead[:, k][~np.isnan(lead[:, k])]
        if len(column):
            out[k] = float(np.median(column))
    return out


def snapshot_features(history: History, order_pos: np.ndarray, at_s: np.ndarray) -> pd.DataFrame:
    """Features of orders (positions in `history`) as known at moments `at_s` (epoch seconds).

    Returns `KEY_COLUMNS` + `FEATURE_COLUMNS`, one row per (order, moment), in input order.
    """
    order_pos = np.asarray(order_pos, dtype="int64")
    at = np.asarray(at_s, dtype="float64")
    h = history
    created = h.created_s[order_pos]
    promise = h.promise_s[order_pos]

    # The visit in progress at t: the last visit of the order entered at or before t.
    scale = 1e10  # epoch seconds stay below it, so (order, time) sort as one float key
    keys = h.visit_order * scale + h.visit_entered
    idx = np.searchsorted(keys, order_pos * scale + at, side="right") - 1
    processing = float(STAGES.index("processing"))
    if len(keys):
        idx_safe = np.clip(idx, 0, None)
        found = (idx >= 0) & (h.visit_order[idx_safe] == order_pos)
        stage_code = np.where(found, h.visit_stage[idx_safe], processing)
        entered = np.where(found, h.visit_entered[idx_safe], created)
        visits = np.where(found, idx - h.first_visit[order_pos] + 1, 0)
    else:  # no events at all: everything is still being processed
        stage_code = np.full(len(order_pos), processing)
        entered = created
        visits = np.zeros(len(order_pos))

    def known(moments: np.ndarray) -> np.ndarray:
        return moments[order_pos] <= at  # NaN compares False: not happened (yet)

    assessed = known(h.duty_assessed_s)
    paid = known(h.duty_paid_s)
    in_customs = known(h.customs_entered_s)
    local = from_epoch(at).dt.tz_convert(SAST)
    frame = pd.DataFrame(
        {
            "order_id": h.order_ids[order_pos],
            "at": from_epoch(at),
            "promised_delivery_at": from_epoch(promise),
            "stage_code": stage_code.astype("float64"),
            "province_code": h.province_code[order_pos],
            "age_hours": (at - created) / HOUR_S,
            "hours_in_stage": (at - entered) / HOUR_S,
            "hours_to_promise": (promise - at) / HOUR_S,
            "visits_so_far": visits.astype("float64"),
            "weekday": local.dt.weekday.to_numpy(dtype="float64"),
            "created_weekday": from_epoch(created).dt.tz_convert(SAST).dt.weekday.to_numpy(dtype="float64"),
            "weight_kg": h.weight[order_pos],
            "declared_value_zar": h.declared[order_pos],
            "duty_state": np.where(paid, 2.0, np.where(assessed, 1.0, 0.0)),
            "duty_owed_zar": np.where(assessed, h.duty_owed[order_pos], np.nan),
            "hours_duty_unpaid": np.where(
                assessed & ~paid, (at - h.duty_assessed_s[order_pos]) / HOUR_S, np.nan
            ),
            "inspected": known(h.inspected_s).astype("float64"),
            "failed_attempt": known(h.failed_s).astype("float64"),
            "hours_since_customs_entry": np.where(
                in_customs, (at - h.customs_entered_s[order_pos]) / HOUR_S, np.nan
            ),
        }
    )
    # Recent past on a grid at or before t, so one figure serves every row of a grid slot.
    grid = np.floor(at / GRID_S) * GRID_S
    # When a parcel not yet in customs is expected there: its first entry into its current
    # stage plus that stage's typical lead time to customs (from recent arrivals, as of the
    # grid slot), never before t. Its arrival week decides its customs congestion.
    unique_grid, grid_index = np.unique(grid, return_inverse=True)
    leads = np.array([_lead_to_customs(h, g) for g in unique_grid]).reshape(-1, len(PRE_CUSTOMS_STAGES))
    expected = np.full(len(order_pos), np.nan)
    for k, stage in enumerate(PRE_CUSTOMS_STAGES):
        rows = (stage_code == STAGES.index(stage)) & ~in_customs
        first = h.stage_first_s[order_pos[rows], k] if len(h.stage_first_s) else np.empty(0)
        first = np.where(np.isnan(first), entered[rows], first)
        expected[rows] = first + leads[grid_index[rows], k]
    expected = np.fmax(expected, at)
    frame["hours_to_customs"] = np.where(in_customs, 0.0, (expected - at) / HOUR_S)
    cohort_anchor = np.where(
        in_customs, h.customs_entered_s[order_pos], np.where(np.isnan(expected), at, expected)
    )
    cohort_week = _week_start_s(cohort_anchor)
    frame["customs_weeks_ahead"] = np.round((cohort_week - _week_start_s(at)) / (7 * DAY_S))
    cohort = pd.DataFrame({"week": cohort_week, "grid": grid})
    figures = {
        (week, g): _customs_figures(h, week, week + 7 * DAY_S, g)
        for week, g in cohort.drop_duplicates().itertuples(index=False)
    }
    names = ("arrivals", "open_share", *(f"released_{hours}h" for hours in RELEASED_WITHIN_HOURS))
    values = np.array([figures[(w, g)] for w, g in zip(cohort_week, grid, strict=True)]).reshape(-1, 5)
    for k, name in enumerate(names):
        frame[f"cohort_{name}"] = values[:, k]
    plain = {
        (week, g): _plain_figures(h, week, week + 7 * DAY_S, g)
        for week, g in cohort.drop_duplicates().itertuples(index=False)
    }
    values = np.array([plain[(w, g)] for w, g in zip(cohort_week, grid, strict=True)]).reshape(
        -1, len(PLAIN_NAMES)
    )
    for k, name in enumerate(PLAIN_NAMES):
        frame[f"cohort_plain_{name}"] = values[:, k]
    recent_plain = {g: _plain_figures(h, g - RECENT_S, g, g) for g in unique_grid}
    values = np.array([recent_plain[g] for g in grid]).reshape(-1, len(PLAIN_NAMES))
    for k, name in enumerate(PLAIN_NAMES):
        if f"recent_plain_{name}" in FEATURE_COLUMNS:
            frame[f"recent_plain_{name}"] = values[:, k]
    recent = {g: _customs_figures(h, g - RECENT_S, g, g) for g in np.unique(grid)}
    values = np.array([recent[g] for g in grid]).reshape(-1, 5)
    for k, name in enumerate(names):
        frame[f"recent_{name}"] = values[:, k]
    return frame[[*KEY_COLUMNS, *FEATURE_COLUMNS]]


def in_flight_features(history: History, orders: pd.Series | None = None) -> pd.DataFrame:
    """Features at `history.as_of_s` of every order still travelling (optionally only `orders`)."""
    travelling = ~np.isin(history.final_stage, list(TERMINAL_STAGES)) & np.isnan(history.end_s)
    if orders is not None:
        travelling &= np.isin(history.order_ids, orders.astype(str).to_numpy())
    pos = np.flatnonzero(travelling)
    return snapshot_features(history, pos, np.full(len(pos), history.as_of_s))


@dataclass
class Snapshots:
    """Training or evaluation rows: features at past moments plus what happened after."""

    features: pd.DataFrame
    late: np.ndarray  # delivered after the promise, or never delivered by it
    remaining_days: np.ndarray  # to delivery; a lower bound while travelling; NaN if never delivered
    delivered: np.ndarray  # remaining_days is exact
    promise_s: np.ndarray


def snapshots(
    history: History,
    *,
    promised_after_s: float = -math.inf,
    promised_by_s: float | None = None,
    not_before_s: float = -math.inf,
    min_hours_to_promise: float = 0.0,
    every_hours: float = 24.0,
    max_per_order: int = 14,
    max_rows: int | None = None,
    seed: int = 0,
) -> Snapshots:
    """Past moments of orders whose promise fell in (promised_after, promised_by], with labels.

    Moments run every `every_hours` from creation (random phase per order) while the order
    is still travelling and at least `min_hours_to_promise` before its promise, never
    before `not_before_s`; at most `max_per_order` of them, drawn at random (the default
    keeps every day before a 10-business-day promise, so slow orders weigh as much as they
    do among the parcels in flight at any moment), and at most `max_rows` in all. The label is
    known for every such order, since its promise has passed: late unless delivered by it.
    `remaining_days` of an order still travelling at `as_of` is the lower bound `as_of - t`
    (a late order must not vanish from the regressor's training just because it is late).
    """
    h = history
    promised_by = h.as_of_s if promised_by_s is None else min(promised_by_s, h.as_of_s)
    eligible = (
        (h.promise_s > promised_after_s)
        & (h.promise_s <= promised_by)
        & (h.final_stage != "cancelled")
        & ~np.isnan(h.created_s)
    )
    pos = np.flatnonzero(eligible)
    rng = np.random.default_rng(seed)
    stop = np.fmin(np.where(np.isnan(h.end_s[pos]), np.inf, h.end_s[pos]), h.promise_s[pos])
    stop = np.minimum(stop, h.promise_s[pos] - min_hours_to_promise * HOUR_S)
    step = every_hours * HOUR_S
    span = np.nan_to_num(stop - h.created_s[pos], nan=0.0, posinf=0.0)
    k_max = int(np.ceil(span.max() / step)) + 1 if len(pos) else 0
    phase = rng.uniform(0, step, size=len(pos))
    times = h.created_s[pos, None] + phase[:, None] + step * np.arange(k_max)[None, :]
    valid = (times < stop[:, None]) & (times >= not_before_s) & (times <= h.as_of_s)
    # Keep at most max_per_order moments per order, chosen at random.
    ranks = np.argsort(np.argsort(np.where(valid, rng.random(times.shape), np.inf), axis=1), axis=1)
    valid &= ranks < max_per_order
    rows, cols = np.nonzero(valid)
    if max_rows is not None and len(rows) > max_rows:
        chosen = np.sort(rng.choice(len(rows), max_rows, replace=False))
        rows, cols = rows[chosen], cols[chosen]
    order_pos = pos[rows]
    at = times[rows, cols]
    delivered = h.delivered_s[order_pos]
    promise = h.promise_s[order_pos]
    late = ~(delivered <= promise)
    travelling = np.isnan(h.end_s[order_pos])
    remaining = np.where(
        ~np.isnan(delivered), (delivered - at) / DAY_S, np.where(travelling, (h.as_of_s - at) / DAY_S, np.nan)
    )
    return Snapshots(
        features=snapshot_features(h, order_pos, at),
        late=late,
        remaining_days=remaining,
        delivered=~np.isnan(delivered),
        promise_s=promise,
    )
