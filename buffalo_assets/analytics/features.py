"""Delay-model features as they were known at a moment: no outcome, no future event.

Everything starts from `History` (the orders and their events, read once; event stages as
learned from the account's own data by `event_stages.py`, from nothing later than the
history's `as_of`). A feature of order o at moment t uses only o's events at or before t,
what o's static fields said by then, and what other parcels did up to t: events after t
never enter it (`tests/test_analytics_core.py` checks that appending them changes nothing).

Nothing here knows how the sandbox, or Buffalo, words a text or when it resets a queue:

* Journey: the stage at t, time in it, age, time to the promise, time since the last event,
  visits and events so far, weekday.
* Parcel: province; declared value; weighed, volumetric mass once the parcel has left
  processing (where it is weighed: before that the API shows no mass).
* Texts: `last_text_id` / `prev_text_id` name the template (`event_stages.template_of`) of
  the newest and the previous event at t. What a template means for the outcome is learned
  per model from its training orders (`TextSignals` in `model.py`), never written here.
* Rhythm now (rolling windows, never calendar cohorts): for every journey stage, the median
  hours a parcel spends in it among the visits that began in the last 7 days (Kaplan-Meier,
  visits still open counted as censored), the same for the row's own stage over 3 and 7
  days; the late share and mean lateness of the last 7 days' deliveries, and the province's
  late share over 14 days. Figures are taken on a 6-hour grid at or before t.

A column with no value at all in a model's training rows is dropped for that model (its
metadata lists it), never fatal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from buffalo_assets.analytics._time import DAY_S, HOUR_S, SAST, as_utc, epoch_seconds, from_epoch
from buffalo_assets.analytics.event_stages import EventStages, learn_event_stages, relabel, template_of
from buffalo_assets.analytics.stages import JOURNEY_STAGES, STAGES, TERMINAL_STAGES
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
CATEGORICAL_FEATURES: tuple[str, ...] = ("stage_code", "province_code", "last_text", "prev_text")
DWELL_STAGE_FEATURES: tuple[str, ...] = tuple(f"dwell_7d_{stage}" for stage in JOURNEY_STAGES)
BASE_FEATURES: tuple[str, ...] = (
    "stage_code",
    "province_code",
    "age_hours",
    "hours_in_stage",
    "hours_to_promise",
    "hours_since_event",
    "visits_so_far",
    "events_so_far",
    "weekday",
    "created_weekday",
    "weight_kg",
    "volumetric_weight_kg",
    "declared_value_zar",
    "stage_dwell_3d",
    "stage_dwell_7d",
    "stage_dwell_ratio",
    *DWELL_STAGE_FEATURES,
    "late_share_7d",
    "lateness_7d",
    "province_late_share_14d",
)
# Added per model from the text ids (model.TextSignals): learned, so never fixed here.
TEXT_FEATURES: tuple[str, ...] = ("last_text", "prev_text", "text_risk_last", "text_risk_max")
FEATURE_COLUMNS: tuple[str, ...] = (*BASE_FEATURES, *TEXT_FEATURES)
KEY_COLUMNS: tuple[str, ...] = ("order_id", "at", "promised_delivery_at", "last_text_id", "prev_text_id")
GRID_S = 6 * HOUR_S  # rolling figures are computed on a 6-hour grid (never after t)
DWELL_WINDOWS_S = (3 * DAY_S, 7 * DAY_S)
LATE_WINDOW_S = 7 * DAY_S
PROVINCE_WINDOW_S = 14 * DAY_S
PROVINCE_PRIOR = 10.0  # deliveries' worth of the overall late share a province's own share is shrunk towards
NO_EVENT = -1
_JOURNEY_CODES = tuple(STAGES.index(stage) for stage in JOURNEY_STAGES)


class NotEnoughHistory(ValueError):
    """The history cannot train or judge a model: too few outcomes (not a fault in the code)."""


@dataclass
class History:
    """Orders and their events as arrays, built once and queried at many moments."""

    as_of_s: float
    order_ids: np.ndarray
    created_s: np.ndarray
    promise_s: np.ndarray
    delivered_s: np.ndarray
    end_s: np.ndarray  # when a terminal stage was reached (NaN while travelling)
    final_stage: np.ndarray  # stage at as_of (last event's), processing before any event
    weight: np.ndarray
    volumetric: np.ndarray
    declared: np.ndarray
    province_code: np.ndarray
    visit_order: np.ndarray  # visits sorted by (order position, entered)
    visit_entered: np.ndarray
    visit_stage: np.ndarray  # index into STAGES
    first_visit: np.ndarray  # per order: index of its first visit (or -1)
    event_order: np.ndarray  # events sorted by (order position, time)
    event_at: np.ndarray
    event_text: np.ndarray  # index into `texts` (NO_EVENT without text)
    first_event: np.ndarray  # per order: index of its first event (or -1)
    texts: np.ndarray  # the distinct templates
    # per journey stage code: visits of all orders sorted by entry, their exit (inf while open)
    stage_in: dict[int, np.ndarray] = field(default_factory=dict)
    stage_out: dict[int, np.ndarray] = field(default_factory=dict)
    # deliveries sorted by time: when, late against the promise, days late, province code
    delivery_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    delivery_late: np.ndarray = field(default_factory=lambda: np.empty(0))
    delivery_days_late: np.ndarray = field(default_factory=lambda: np.empty(0))
    delivery_province: np.ndarray = field(default_factory=lambda: np.empty(0))
    stages: EventStages | None = None

    @property
    def size(self) -> int:
        return len(self.order_ids)


def _first_time(order_pos: np.ndarray, at: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf)
    np.minimum.at(out, order_pos[mask], at[mask])
    out[np.isinf(out)] = np.nan
    return out


def last_at_or_before(
    order: np.ndarray, moments: np.ndarray, query_order: np.ndarray, query_at: np.ndarray
) -> np.ndarray:
    """For each query (order position, moment): the index of the last entry of that order at
    or before the moment, in entries sorted by (order, moment); -1 when there is none.

    Exact for any number of orders and any times (no combined float key to lose precision).
    """
    query_order = np.asarray(query_order, dtype="int64")
    n, q = len(order), len(query_order)
    if not n or not q:
        return np.full(q, -1, dtype="int64")
    merged_order = np.concatenate([np.asarray(order, dtype="int64"), query_order])
    merged_at = np.concatenate([np.asarray(moments, dtype="float64"), np.asarray(query_at, dtype="float64")])
    is_query = np.concatenate([np.zeros(n, dtype=bool), np.ones(q, dtype=bool)])
    # By order, then time; at equal times entries before queries ("at or before").
    sequence = np.lexsort((is_query, merged_at, merged_order))
    entries_so_far = np.cumsum(~is_query[sequence])
    found = np.full(q, -1, dtype="int64")
    queries = is_query[sequence]
    last = entries_so_far[queries] - 1
    positions = sequence[queries] - n
    same = last >= 0
    same[same] = order[last[same]] == query_order[positions[same]]
    found[positions[same]] = last[same]
    return found


def _firsts(sorted_order: np.ndarray, n: int) -> np.ndarray:
    """Per order position: index of its first entry in `sorted_order` (-1 when none)."""
    out = np.full(n, -1, dtype="int64")
    if len(sorted_order):
        starts = np.r_[True, sorted_order[1:] != sorted_order[:-1]]
        out[sorted_order[starts]] = np.flatnonzero(starts)
    return out


def build_history(
    clean_orders: pd.DataFrame,
    events: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    promise_business_days: int = DEFAULT_PROMISE_BUSINESS_DAYS,
) -> History:
    """Index `core.clean_orders` and `core.order_events` for as-of feature queries.

    Events after `as_of` or without a time are ignored, and so are orders created after it.
    Event stages are relabelled as learned (`event_stages`) from the events up to `as_of`
    and the orders' statuses in `clean_orders`, which should be read at `as_of` (the assets
    read them now and take `as_of` from them): what a wording means is then learned from
    nothing later than the moment. Orders without a creation time have no promise and are
    left out.
    """
    now_s = as_utc(as_of).timestamp()
    if len(events):
        moments = pd.to_datetime(events["event_at"], utc=True)
        events = events[moments.notna() & (moments <= pd.Timestamp(now_s, unit="s", tz="UTC"))]
    stages = learn_event_stages(clean_orders, events)
    events = relabel(events, stages)
    created_all = pd.to_datetime(clean_orders["created_at"], utc=True)
    # Orders created after as_of do not exist yet.
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
    codes, uniques = pd.factorize(
        pd.Series(events["description"].to_numpy()[keep] if len(events) else [], dtype="object").map(
            template_of
        )
    )
    ev = pd.DataFrame(
        {
            "pos": pos[keep].astype("int64"),
            "at": at[keep],
            "stage": events["stage"].to_numpy()[keep] if len(events) else [],
            "text": codes.astype("int64"),
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
    next_same = np.r_[visit_order[1:] == visit_order[:-1], False] if len(starts) else np.array([], bool)
    visit_left = np.where(next_same, np.r_[visit_entered[1:], np.inf] if len(starts) else [], np.inf)
    terminal_visit = np.isin(visit_stage, [stage_index[s] for s in TERMINAL_STAGES])
    end_s = _first_time(visit_order, visit_entered, terminal_visit, n)
    final_codes = np.full(n, stage_index["processing"])
    if len(starts):
        last = np.r_[visit_order[1:] != visit_order[:-1], True]
        final_codes[visit_order[last]] = visit_stage[last]

    stage_in: dict[int, np.ndarray] = {}
    stage_out: dict[int, np.ndarray] = {}
    for code in _JOURNEY_CODES:
        mine = visit_stage == code
        by_entry = np.argsort(visit_entered[mine], kind="stable")
        stage_in[code] = visit_entered[mine][by_entry]
        stage_out[code] = visit_left[mine][by_entry]

    promise_s = epoch_seconds(promised_delivery(created, promise_business_days))
    province = orders["province"].astype("string")
    province_code = (
        province.map({p: float(i) for i, p in enumerate(PROVINCES)})
        .astype("float64")
        .to_numpy(na_value=np.nan)
    )
    done = np.flatnonzero(~np.isnan(delivered_s))
    by_time = done[np.argsort(delivered_s[done], kind="stable")]
    return History(
        as_of_s=now_s,
        order_ids=ids,
        created_s=epoch_seconds(created),
        promise_s=promise_s,
        delivered_s=delivered_s,
        end_s=end_s,
        final_stage=np.asarray(STAGES, dtype=object)[final_codes],
        weight=_numbers(orders, "weight_kg"),
        volumetric=_numbers(orders, "volumetric_weight_kg"),
        declared=_numbers(orders, "declared_value_zar"),
        province_code=province_code,
        visit_order=visit_order,
        visit_entered=visit_entered,
        visit_stage=visit_stage,
        first_visit=_firsts(visit_order, n),
        event_order=ev_pos,
        event_at=ev_at,
        event_text=ev["text"].to_numpy(),
        first_event=_firsts(ev_pos, n),
        texts=np.asarray(uniques, dtype=object),
        stage_in=stage_in,
        stage_out=stage_out,
        delivery_s=delivered_s[by_time],
        delivery_late=(delivered_s[by_time] > promise_s[by_time]).astype("float64"),
        delivery_days_late=np.clip((delivered_s[by_time] - promise_s[by_time]) / DAY_S, -10, 20),
        delivery_province=province_code[by_time],
        stages=stages,
    )


def _numbers(orders: pd.DataFrame, column: str) -> np.ndarray:
    if column not in orders.columns:
        return np.full(len(orders), np.nan)
    return pd.to_numeric(orders[column], errors="coerce").to_numpy(dtype="float64")


def _km_median_hours(entered: np.ndarray, left: np.ndarray, now: float) -> float:
    """Kaplan-Meier median hours in a stage of visits `entered` (exits `left`, inf while open) at `now`."""
    if not len(entered):
        return np.nan
    held = np.minimum(left, now) - entered
    order = np.argsort(held, kind="stable")
    out = (left <= now)[order]
    at_risk = len(held) - np.arange(len(held))
    survival = np.cumprod(np.where(out, 1.0 - 1.0 / at_risk, 1.0))
    below = np.flatnonzero(survival <= 0.5)
    return float(held[order][below[0]]) / HOUR_S if len(below) else np.nan


def _dwell(history: History, code: int, grid: np.ndarray, window_s: float) -> np.ndarray:
    """Median hours in stage `code` of the visits begun in [g - window, g), at each grid moment g."""
    entered = history.stage_in.get(code, np.empty(0))
    left = history.stage_out.get(code, np.empty(0))
    lower = np.searchsorted(entered, grid - window_s, side="left")
    upper = np.searchsorted(entered, grid, side="left")
    return np.array(
        [_km_median_hours(entered[i:j], left[i:j], g) for g, i, j in zip(grid, lower, upper, strict=True)]
    )


def _window_mean(
    times: np.ndarray, values: np.ndarray, grid: np.ndarray, window_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of `values` whose time lies in [g - window, g), per grid moment."""
    total = np.r_[0.0, np.cumsum(values)]
    lower = np.searchsorted(times, grid - window_s, side="left")
    upper = np.searchsorted(times, grid, side="left")
    return total[upper] - total[lower], (upper - lower).astype("float64")


def _rhythm(history: History, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Figures of the recent past at each grid moment (independent of any one order)."""
    h = history
    out = {f"dwell_7d_{stage}": _dwell(h, STAGES.index(stage), grid, 7 * DAY_S) for stage in JOURNEY_STAGES}
    out["dwell_3d"] = np.column_stack([_dwell(h, code, grid, 3 * DAY_S) for code in _JOURNEY_CODES])
    late, count = _window_mean(h.delivery_s, h.delivery_late, grid, LATE_WINDOW_S)
    lateness, _ = _window_mean(h.delivery_s, h.delivery_days_late, grid, LATE_WINDOW_S)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["late_share_7d"] = late / count
        out["lateness_7d"] = lateness / count
    overall, overall_count = _window_mean(h.delivery_s, h.delivery_late, grid, PROVINCE_WINDOW_S)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = overall / overall_count
    shares = np.full((len(grid), len(PROVINCES)), np.nan)
    for code in range(len(PROVINCES)):
        mine = h.delivery_province == code
        late_p, count_p = _window_mean(h.delivery_s[mine], h.delivery_late[mine], grid, PROVINCE_WINDOW_S)
        shares[:, code] = (late_p + PROVINCE_PRIOR * prior) / (count_p + PROVINCE_PRIOR)
    out["province_share"] = shares
    return out


def snapshot_features(history: History, order_pos: np.ndarray, at_s: np.ndarray) -> pd.DataFrame:
    """Features of orders (positions in `history`) as known at moments `at_s` (epoch seconds).

    Returns `KEY_COLUMNS` + `BASE_FEATURES`, one row per (order, moment), in input order;
    `model.TextSignals` turns the two text ids into `TEXT_FEATURES`.
    """
    order_pos = np.asarray(order_pos, dtype="int64")
    at = np.asarray(at_s, dtype="float64")
    h = history
    created = h.created_s[order_pos]
    promise = h.promise_s[order_pos]

    # The visit in progress at t: the last visit of the order entered at or before t.
    processing = float(STAGES.index("processing"))
    idx = last_at_or_before(h.visit_order, h.visit_entered, order_pos, at)
    if len(h.visit_order):
        safe = np.clip(idx, 0, None)
        found = idx >= 0
        stage_code = np.where(found, h.visit_stage[safe], processing).astype("float64")
        entered = np.where(found, h.visit_entered[safe], created)
        visits = np.where(found, idx - h.first_visit[order_pos] + 1, 0).astype("float64")
    else:  # no events at all: everything is still being processed
        stage_code = np.full(len(order_pos), processing)
        entered = created
        visits = np.zeros(len(order_pos))

    # The newest and the previous event at t.
    last = last_at_or_before(h.event_order, h.event_at, order_pos, at)
    if len(h.event_order):
        safe = np.clip(last, 0, None)
        has_last = last >= 0
        has_prev = has_last & (last - 1 >= h.first_event[order_pos])
        last_text = np.where(has_last, h.event_text[safe], NO_EVENT)
        prev_text = np.where(has_prev, h.event_text[np.clip(last - 1, 0, None)], NO_EVENT)
        last_at = np.where(has_last, h.event_at[safe], np.nan)
        events_so_far = np.where(has_last, last - h.first_event[order_pos] + 1, 0).astype("float64")
    else:
        last_text = prev_text = np.full(len(order_pos), NO_EVENT)
        last_at = np.full(len(order_pos), np.nan)
        events_so_far = np.zeros(len(order_pos))

    weighed = stage_code != processing  # the API shows a mass once the warehouse has weighed it
    frame = pd.DataFrame(
        {
            "order_id": h.order_ids[order_pos],
            "at": from_epoch(at),
            "promised_delivery_at": from_epoch(promise),
            "last_text_id": last_text.astype("int64"),
            "prev_text_id": prev_text.astype("int64"),
            "stage_code": stage_code,
            "province_code": h.province_code[order_pos],
            "age_hours": (at - created) / HOUR_S,
            "hours_in_stage": (at - entered) / HOUR_S,
            "hours_to_promise": (promise - at) / HOUR_S,
            "hours_since_event": (at - last_at) / HOUR_S,
            "visits_so_far": visits,
            "events_so_far": events_so_far,
            "weekday": from_epoch(at).dt.tz_convert(SAST).dt.weekday.to_numpy(dtype="float64"),
            "created_weekday": from_epoch(created).dt.tz_convert(SAST).dt.weekday.to_numpy(dtype="float64"),
            "weight_kg": np.where(weighed, h.weight[order_pos], np.nan),
            "volumetric_weight_kg": np.where(weighed, h.volumetric[order_pos], np.nan),
            "declared_value_zar": h.declared[order_pos],
        }
    )
    grid = np.floor(at / GRID_S) * GRID_S
    unique_grid, slot = np.unique(grid, return_inverse=True)
    rhythm = _rhythm(h, unique_grid)
    lookup = np.full(len(STAGES), -1, dtype="int64")
    lookup[list(_JOURNEY_CODES)] = np.arange(len(_JOURNEY_CODES))
    column = lookup[stage_code.astype("int64")]
    in_journey = column >= 0
    own_3d = np.full(len(order_pos), np.nan)
    own_7d = np.full(len(order_pos), np.nan)
    dwell_7d = np.column_stack([rhythm[name] for name in DWELL_STAGE_FEATURES]) if len(unique_grid) else None
    if dwell_7d is not None:
        own_3d[in_journey] = rhythm["dwell_3d"][slot[in_journey], column[in_journey]]
        own_7d[in_journey] = dwell_7d[slot[in_journey], column[in_journey]]
    frame["stage_dwell_3d"] = own_3d
    frame["stage_dwell_7d"] = own_7d
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["stage_dwell_ratio"] = frame["hours_in_stage"].to_numpy() / own_7d
    for name in DWELL_STAGE_FEATURES:
        frame[name] = rhythm[name][slot] if len(unique_grid) else np.nan
    frame["late_share_7d"] = rhythm["late_share_7d"][slot] if len(unique_grid) else np.nan
    frame["lateness_7d"] = rhythm["lateness_7d"][slot] if len(unique_grid) else np.nan
    province = h.province_code[order_pos]
    known = ~np.isnan(province)
    share = np.full(len(order_pos), np.nan)
    if len(unique_grid):
        share[known] = rhythm["province_share"][slot[known], province[known].astype("int64")]
    frame["province_late_share_14d"] = share
    return frame[[*KEY_COLUMNS, *BASE_FEATURES]]


def in_flight_features(history: History, orders: pd.Series | None = None) -> pd.DataFrame:
    """Features at `history.as_of_s` of every order still travelling (optionally only `orders`)."""
    pos = np.flatnonzero(in_flight(history))
    if orders is not None:
        # pandas hashes; numpy's isin compares every pair for strings (object arrays).
        pos = pos[pd.Series(history.order_ids[pos]).isin(orders.astype(str)).to_numpy()]
    return snapshot_features(history, pos, np.full(len(pos), history.as_of_s))


def in_flight_at(history: History, at_s: float) -> pd.DataFrame:
    """Features at `at_s` (at or before the history's moment) of every order travelling then."""
    created = history.created_s <= at_s
    ended = ~np.isnan(history.end_s) & (history.end_s <= at_s)
    delivered = ~np.isnan(history.delivered_s) & (history.delivered_s <= at_s)
    pos = np.flatnonzero(created & ~ended & ~delivered)
    return snapshot_features(history, pos, np.full(len(pos), at_s))


def in_flight(history: History) -> np.ndarray:
    """Per order: still travelling at `as_of` (no terminal stage reached)."""
    return ~np.isin(history.final_stage, list(TERMINAL_STAGES)) & np.isnan(history.end_s)


@dataclass
class Snapshots:
    """Training or evaluation rows: features at past moments plus what happened after."""

    features: pd.DataFrame
    late: np.ndarray  # delivered after the promise, or never delivered by it
    remaining_days: np.ndarray  # to delivery; a lower bound while travelling; NaN if never delivered
    delivered: np.ndarray  # remaining_days is exact
    promise_s: np.ndarray

    @property
    def orders(self) -> int:
        return int(self.features["order_id"].nunique())


def snapshots(
    history: History,
    *,
    promised_after_s: float = -math.inf,
    promised_by_s: float | None = None,
    from_dispatch: bool = False,
    min_hours_to_promise: float = 0.0,
    every_hours: float = 24.0,
    max_per_order: int = 16,
    max_rows: int | None = None,
    seed: int = 0,
    known_by_s: float | None = None,
) -> Snapshots:
    """Past moments of orders whose promise fell in (promised_after, promised_by], with labels.

    Moments run every `every_hours` (random phase per order) from creation, or from the
    order's first visit to a stage after processing when `from_dispatch`, while the order
    is still travelling and at least `min_hours_to_promise` before its promise; at most
    `max_per_order` of them, drawn at random (the default keeps every day of a journey, so
    slow orders weigh as much as they do among the parcels in flight at any moment), and
    at most `max_rows` in all. The label is known for every such order, since its promise
    has passed: late unless delivered by it. `remaining_days` is what was known at
    `known_by_s` (default `as_of`): the days to delivery if it was delivered by then, else,
    while still travelling then, the lower bound `known_by - t`; a training window's rows
    so never learn of a delivery after the window's end.
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
    begin = h.created_s[pos]
    if from_dispatch:
        begin = _left_processing(h, pos)
    stop = np.fmin(np.where(np.isnan(h.end_s[pos]), np.inf, h.end_s[pos]), h.promise_s[pos])
    stop = np.minimum(stop, h.promise_s[pos] - min_hours_to_promise * HOUR_S)
    step = every_hours * HOUR_S
    span = np.nan_to_num(stop - begin, nan=0.0, posinf=0.0, neginf=0.0)
    k_max = int(np.ceil(max(span.max(), 0.0) / step)) + 1 if len(pos) else 0
    phase = rng.uniform(0, step, size=len(pos))
    times = begin[:, None] + phase[:, None] + step * np.arange(k_max)[None, :]
    valid = (times < stop[:, None]) & (times <= h.as_of_s) & ~np.isnan(begin)[:, None]
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
    known_by = h.as_of_s if known_by_s is None else min(known_by_s, h.as_of_s)
    delivered_then = delivered <= known_by  # NaN compares False
    travelling_then = ~(h.end_s[order_pos] <= known_by)
    remaining = np.where(
        delivered_then, (delivered - at) / DAY_S, np.where(travelling_then, (known_by - at) / DAY_S, np.nan)
    )
    return Snapshots(
        features=snapshot_features(h, order_pos, at),
        late=~(delivered <= promise),
        remaining_days=remaining,
        delivered=delivered_then,
        promise_s=promise,
    )


def _left_processing(history: History, pos: np.ndarray) -> np.ndarray:
    """When each order first entered a stage after processing (NaN if it never did)."""
    h = history
    processing = STAGES.index("processing")
    moved = h.visit_stage != processing
    first = _first_time(h.visit_order, h.visit_entered, moved, h.size)
    return first[pos]
