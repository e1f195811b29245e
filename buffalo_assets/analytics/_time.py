"""Small time helpers shared by the analytics modules."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd


SAST = ZoneInfo("Africa/Johannesburg")
DAY_S = 86_400.0
HOUR_S = 3_600.0


def epoch_seconds(values: pd.Series) -> np.ndarray:
    """Seconds since the epoch as floats (NaN for missing), whatever the series' unit."""
    series = pd.to_datetime(values, utc=True)
    return np.array((series - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), dtype="float64")


def from_epoch(seconds: np.ndarray | pd.Series) -> pd.Series:
    """UTC timestamps from float epoch seconds (NaN becomes NaT)."""
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype="float64") * 1e6, unit="us", utc=True))


def period_start(moments: pd.Series, grain: str = "day") -> pd.Series:
    """The SAST date each moment's period starts on: its day, or the Monday of its ISO week."""
    local = pd.to_datetime(moments, utc=True).dt.tz_convert(SAST).dt.tz_localize(None).dt.normalize()
    if grain == "week":
        local = local - pd.to_timedelta(local.dt.weekday, unit="D")
    return local.dt.date


def as_utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """A tz-aware UTC timestamp; naive input is refused, since its zone would be a guess."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware, got naive {stamp.isoformat()}")
    return stamp.tz_convert("UTC")
