"""Stage visits: how long every order spent in each stage of its journey."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from buffalo_assets.analytics._time import HOUR_S, as_utc, epoch_seconds, from_epoch
from buffalo_assets.analytics.stages import TERMINAL_STAGES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

STAGE_DURATION_COLUMNS: tuple[str, ...] = (
    "order_id",
    "stage_seq",
    "stage",
    "entered_at",
    "left_at",
    "hours",
    "is_open",
)


def order_stage_durations(events: pd.DataFrame, as_of: datetime | pd.Timestamp) -> pd.DataFrame:
    """One row per stage visit per order, from `core.order_events`.

    Consecutive events of the same stage are one visit; a visit ends when the next one
    starts. The last visit of an order still travelling is open and ends at `as_of`; a
    terminal stage (delivered, returned, cancelled, lost) is a visit of zero hours, so the
    hours of an order add up to its age from first event to its end (or to `as_of`).
    Events without a time, and events after `as_of`, are not counted.
    """
    now = as_utc(as_of).timestamp()
    at = epoch_seconds(events["event_at"]) if len(events) else np.empty(0)
    keep = ~np.isnan(at) & (at <= now)
    frame = pd.DataFrame(
        {
            "order_id": events["order_id"].to_numpy()[keep].astype(str) if len(events) else [],
            "at": at[keep],
            "stage": events["stage"].to_numpy()[keep] if len(events) else [],
        }
    )
    if frame.empty:
        return _empty()
    frame = frame.sort_values(["order_id", "at"], kind="stable").reset_index(drop=True)
    order = frame["order_id"].to_numpy()
    stage = frame["stage"].to_numpy()
    new_order = np.r_[True, order[1:] != order[:-1]]
    new_visit = new_order | np.r_[True, stage[1:] != stage[:-1]]
    starts = np.flatnonzero(new_visit)
    visit_order = order[starts]
    visit_stage = stage[starts]
    entered = frame["at"].to_numpy()[starts]
    last_of_order = np.r_[visit_order[1:] != visit_order[:-1], True]
    left = np.r_[entered[1:], np.nan]
    terminal = np.isin(visit_stage, list(TERMINAL_STAGES))
    left = np.where(last_of_order, np.where(terminal, entered, now), left)
    is_open = last_of_order & ~terminal
    first_visit = np.r_[True, visit_order[1:] != visit_order[:-1]]
    group_start = np.maximum.accumulate(np.where(first_visit, np.arange(len(starts)), 0))
    seq = np.arange(len(starts)) - group_start + 1
    return pd.DataFrame(
        {
            "order_id": visit_order,
            "stage_seq": seq.astype("int64"),
            "stage": visit_stage,
            "entered_at": from_epoch(entered),
            "left_at": from_epoch(left),
            "hours": np.round((left - entered) / HOUR_S, 4),
            "is_open": is_open,
        }
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": pd.Series(dtype="object"),
            "stage_seq": pd.Series(dtype="int64"),
            "stage": pd.Series(dtype="object"),
            "entered_at": pd.Series(dtype="datetime64[us, UTC]"),
            "left_at": pd.Series(dtype="datetime64[us, UTC]"),
            "hours": pd.Series(dtype="float64"),
            "is_open": pd.Series(dtype="bool"),
        }
    )
