"""A South African calendar for BI date tables: every day, its ISO week, and whether it is a
business day (weekends and public holidays, from the `holidays` package, are not: the same
days the promise skips, `status.py`).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

CALENDAR_COLUMNS: tuple[str, ...] = (
    "date",
    "iso_year",
    "iso_week",
    "week_start",
    "weekday",
    "month_start",
    "is_weekend",
    "holiday_name",
    "is_business_day",
)


def sa_calendar(first_year: int, last_year: int) -> pd.DataFrame:
    """One row per day of `first_year`..`last_year` (inclusive)."""
    import holidays

    if last_year < first_year:
        raise ValueError(f"the calendar's last year {last_year} is before its first {first_year}")
    names = holidays.country_holidays("ZA", years=range(first_year, last_year + 1))
    days = pd.date_range(date(first_year, 1, 1), date(last_year, 12, 31), freq="D")
    iso = days.isocalendar()
    holiday = [names.get(day.date()) for day in days]
    weekend = days.weekday >= 5
    return pd.DataFrame(
        {
            "date": days.date,
            "iso_year": iso["year"].to_numpy(dtype="int64"),
            "iso_week": iso["week"].to_numpy(dtype="int64"),
            "week_start": (days - pd.to_timedelta(days.weekday, unit="D")).date,
            "weekday": days.weekday + 1,  # ISO: Monday 1 .. Sunday 7
            "month_start": days.to_period("M").to_timestamp().date,
            "is_weekend": weekend,
            "holiday_name": holiday,
            "is_business_day": ~weekend & pd.isna(pd.Series(holiday, dtype="object")).to_numpy(),
        }
    )[list(CALENDAR_COLUMNS)]
