"""How far what is in flight now has moved from what a delay model was trained on.

At training, `FeatureProfile.of` keeps a small picture of each feature: deciles (numeric)
or category shares (categorical: stage, province, text categories) of the orders that were
in flight at daily moments of the last 14 days of the training window (the same kind of
population scoring sees), the typical value (median or most common) and percentiles over
the training rows, and the late share of the training orders. At scoring, `drift` compares
the orders in flight now with it, feature by feature:

* a feature whose values differ between the orders in flight (mass, time in stage, the
  newest text's category, ...): the population stability index (PSI) over those deciles or
  categories, sum((now - then) x ln(now / then)); 0.1 is a shift worth a look, 0.25 a large
  one (BUFFALO_DRIFT_PSI, default 0.25, decides what counts as drift, on top of what a
  sample of n orders in flight scatters by with nothing changed: PSI is about chi-square / n,
  so its mean (bins - 1) / n plus three standard deviations, sqrt(2 (bins - 1)) / n each);
* a feature with one value for every order now (how long customs is taking this week, the
  share of recent deliveries that were late): where that value falls among the training
  rows, as a percentile; it drifts when it lies beyond anything the model learned from (the
  training range, plus a tenth of its spread);
* the late share of the orders delivered in the last 14 days against the training orders',
  as a two-bin PSI.

Left out (`NOT_COMPARED`): the calendar, and the rolling figures seen through an order's
own stage or province (compared through what they are made of).
The typical values are also what `reasons.py` sets a feature to when it asks the model how
much that feature raised an order's risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

DRIFT_COLUMNS: tuple[str, ...] = (
    "computed_at",
    "model_version",
    "feature",
    "measure",
    "value",
    "drifted",
    "in_flight_orders",
)
# Not compared (`NOT_COMPARED`):
# * the calendar, and the clocks of a journey (age, time in stage, time to the promise, since
#   the last event, events and visits so far): at one moment their shape follows the weekday
#   and the hour (promises skip weekends and holidays, warehouses work in shifts), so one
#   moment differs from an average of moments with nothing changed; what they would show
#   (parcels piling up in a stage) shows in the stage mix and the rolling dwell figures;
# * the rolling figures seen through an order's own stage or province: a handful of values
#   at one moment, compared through what they are made of (dwell_7d_<stage>, the late share).
NOT_COMPARED = frozenset(
    {
        "weekday", "age_hours", "hours_in_stage", "hours_to_promise", "hours_since_event",
        "events_so_far", "visits_so_far", "stage_dwell_3d", "stage_dwell_7d", "stage_dwell_ratio",
        "province_late_share_14d",
    }
)  # fmt: skip
# A one-valued feature drifts when it lies beyond the training range by more than this share
# of the range's 1st-99th percentile spread (a value just past the extremes is no news).
RANGE_MARGIN = 0.1
EPSILON = 1e-4  # share given to an empty bin, so that ln(now / then) stays finite
MAX_CATEGORIES = 40
LATE_SHARE_FEATURE = "late_share_delivered_14d"


@dataclass
class FeatureProfile:
    """Per feature: training deciles or category shares, and its typical value."""

    edges: dict[str, np.ndarray] = field(default_factory=dict)  # numeric: inner decile edges
    categories: dict[str, np.ndarray] = field(default_factory=dict)  # categorical: the values kept
    shares: dict[str, np.ndarray] = field(default_factory=dict)  # per bin (last bin: missing)
    percentiles: dict[str, np.ndarray] = field(default_factory=dict)  # numeric: 0th..100th
    typical: dict[str, float] = field(default_factory=dict)  # median, or the most common category
    late_share: float | None = None  # of the training orders

    @classmethod
    def of(
        cls,
        x: np.ndarray,
        columns: tuple[str, ...],
        categorical: set[str],
        late_share: float | None,
        *,
        population: np.ndarray | None = None,
    ) -> FeatureProfile:
        """From the training rows `x` and `population`, the orders in flight at moments of the
        training window (what scoring sees; default `x`): bins and shares from the population,
        typical values and percentiles from the rows."""
        profile = cls(late_share=late_share)
        population = x if population is None else population
        for j, column in enumerate(columns):
            values = x[:, j]
            known = values[~np.isnan(values)]
            seen = population[:, j][~np.isnan(population[:, j])]
            if column in categorical:
                kinds, counts = np.unique(known, return_counts=True)
                profile.typical[column] = float(kinds[np.argmax(counts)]) if len(kinds) else np.nan
                kinds, counts = np.unique(seen, return_counts=True)
                kept = kinds[np.argsort(-counts, kind="stable")][:MAX_CATEGORIES]
                profile.categories[column] = np.sort(kept)  # may be empty: every value missing
            else:
                profile.percentiles[column] = (
                    np.percentile(known, np.arange(101)) if len(known) else np.full(101, np.nan)
                )
                profile.typical[column] = float(np.median(known)) if len(known) else np.nan
                profile.edges[column] = (
                    np.unique(np.percentile(seen, np.arange(10, 100, 10))) if len(seen) else np.empty(0)
                )
            profile.shares[column] = profile.binned(column, population[:, j])
        return profile

    def binned(self, column: str, values: np.ndarray) -> np.ndarray:
        """Shares of `values` per bin of `column` (the last bin: missing)."""
        values = np.asarray(values, dtype="float64")
        missing = np.isnan(values)
        if column in self.categories:
            kept = self.categories[column]
            index = np.searchsorted(kept, values)
            inside = (
                (index < len(kept)) & (kept[np.clip(index, 0, len(kept) - 1)] == values)
                if len(kept)
                else np.zeros(len(values), dtype=bool)
            )
            bins = np.where(inside, index, len(kept))  # len(kept): a category the training never had
            size = len(kept) + 2
        else:
            edges = self.edges[column]
            bins = np.searchsorted(edges, values, side="right")
            size = len(edges) + 2
        bins = np.where(missing, size - 1, bins)
        counts = np.bincount(bins.astype("int64"), minlength=size).astype("float64")
        return counts / max(len(values), 1)


def psi(then: np.ndarray, now: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    a = np.clip(np.asarray(then, dtype="float64"), EPSILON, None)
    b = np.clip(np.asarray(now, dtype="float64"), EPSILON, None)
    return float(np.sum((b - a) * np.log(b / a)))


def drift(
    profile: FeatureProfile,
    x: np.ndarray,
    columns: tuple[str, ...],
    recent_late_share: float | None,
    recent_deliveries: int,
    threshold: float,
) -> list[dict[str, Any]]:
    """One row per compared feature: measure (psi or percentile), value, drifted."""
    rows: list[dict[str, Any]] = []
    for j, column in enumerate(columns):
        if column in NOT_COMPARED or column not in profile.shares:
            continue
        values = x[:, j]
        known = values[~np.isnan(values)]
        if not len(known):
            continue
        if column in profile.percentiles and len(np.unique(known)) == 1:
            at = profile.percentiles[column]
            value = float(known[0])
            percentile = float(np.clip(np.searchsorted(at, value, side="right") - 0.5, 0.0, 100.0))
            margin = RANGE_MARGIN * max(float(at[99] - at[1]), 0.0)
            outside = value < at[0] - margin or value > at[100] + margin
            rows.append({"feature": column, "measure": "percentile", "value": percentile, "drifted": outside})
            continue
        now = profile.binned(column, values)
        value = psi(profile.shares[column], now)
        # What a sample of n orders scatters by with nothing changed: PSI is about chi-square / n,
        # mean (bins - 1) / n, standard deviation sqrt(2 (bins - 1)) / n; allow three of those.
        free = max(int(np.count_nonzero(np.maximum(now, profile.shares[column]))) - 1, 0)
        noise = (free + 3 * np.sqrt(2 * free)) / len(values)
        rows.append(
            {"feature": column, "measure": "psi", "value": value, "drifted": value > threshold + noise}
        )
    if profile.late_share is not None and recent_late_share is not None:
        then = np.array([profile.late_share, 1 - profile.late_share])
        now = np.array([recent_late_share, 1 - recent_late_share])
        value = psi(then, now)
        noise = (1 + 3 * np.sqrt(2)) / max(recent_deliveries, 1)  # two bins: one degree of freedom
        rows.append(
            {
                "feature": LATE_SHARE_FEATURE,
                "measure": "psi",
                "value": value,
                "drifted": value > threshold + noise,
            }
        )
    return rows


def drift_frame(
    rows: list[dict[str, Any]], computed_at: pd.Timestamp, model_version: str, orders: int
) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["feature", "measure", "value", "drifted"])
    frame.insert(0, "model_version", model_version)
    frame.insert(0, "computed_at", computed_at)
    frame["in_flight_orders"] = orders
    frame["value"] = frame["value"].astype("float64").round(4)
    frame["drifted"] = frame["drifted"].astype(bool)
    return frame[list(DRIFT_COLUMNS)]


def drift_summary(frame: pd.DataFrame) -> str:
    """The drifted features in a line: 'dwell_7d_customs at the 100th percentile, ...'."""
    drifted = frame[frame["drifted"]]
    parts = [
        f"{row.feature} at the {row.value:.0f}th percentile of training"
        if row.measure == "percentile"
        else f"{row.feature} PSI {row.value:.2f}"
        for row in drifted.itertuples()
    ]
    return ", ".join(parts)
