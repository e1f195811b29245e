"""How well a delay scorer did: the measures, their intervals, calibration and the range's coverage.

All plain numpy over one set of judged moments (`late`, one score per moment):

* `scorer_metrics`: ROC AUC and average precision (threshold-free, ties counted as
  scikit-learn does), the Brier score, precision/recall/F1 at `p_late >= threshold`, and the
  mean absolute error of the expected date.
* `bootstrap` / `interval`: whole promise days resampled with replacement (parcels promised
  on the same day share their weeks of congestion, so they are not independent), giving a
  5th-95th percentile interval for any measure or difference of measures.
* `reliability`: the reliability table (mean predicted p_late against the observed late
  share per probability bin).
* `band_coverage`: how often the delivery fell inside the expected 10th-90th percentile range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics._time import SAST, from_epoch

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from buffalo_assets.analytics.features import Snapshots
else:
    from buffalo_assets.lazy import np, pd

BOOTSTRAP_ROUNDS = 300
INTERVAL = (5.0, 95.0)  # percentiles of the bootstrap: a one-sided 95% bound each way
RELIABILITY_BINS = 10


def _ranked(score: np.ndarray) -> tuple[np.ndarray, int]:
    """Group index of each score among the distinct scores, ascending, and how many groups."""
    _, inverse = np.unique(np.asarray(score, dtype="float64"), return_inverse=True)
    return inverse, int(inverse.max()) + 1 if len(inverse) else 0


def _auc_ap(late: np.ndarray, groups: np.ndarray, count: int, weight: np.ndarray) -> tuple[float, float]:
    """Weighted ROC AUC and average precision from score groups (ties counted as sklearn does)."""
    pos = np.bincount(groups, weights=weight * late, minlength=count)
    neg = np.bincount(groups, weights=weight * ~late, minlength=count)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan"), float("nan")
    below = np.cumsum(neg) - neg
    auc = float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))
    # Average precision: thresholds from the highest score down.
    tp = np.cumsum(pos[::-1])
    fp = np.cumsum(neg[::-1])
    flagged = tp + fp
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
    ap = float((pos[::-1] * precision).sum() / total_pos)
    return auc, ap


def scorer_metrics(
    late: np.ndarray, p_late: np.ndarray, threshold: float, abs_error_days: np.ndarray | None = None
) -> dict[str, float]:
    """AUC, average precision, Brier score; precision/recall/F1 at p_late >= threshold; MAE in days."""
    late = np.asarray(late, dtype=bool)
    p = np.asarray(p_late, dtype="float64")
    groups, count = _ranked(p)
    auc, ap = _auc_ap(late, groups, count, np.ones(len(late)))
    flagged = p >= threshold
    hits = float((flagged & late).sum())
    precision = hits / flagged.sum() if flagged.any() else float("nan")
    recall = hits / late.sum() if late.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    errors = abs_error_days[~np.isnan(abs_error_days)] if abs_error_days is not None else np.empty(0)
    return {
        "auc": auc,
        "ap": ap,
        "brier": float(np.mean((p - late) ** 2)) if len(p) else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "mae_days": float(errors.mean()) if len(errors) else float("nan"),
        "threshold": float(threshold),
        "rows": int(len(late)),
        "late_share": float(late.mean()) if len(late) else float("nan"),
        "flagged": int(flagged.sum()),
    }


def reliability(late: np.ndarray, p_late: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, float]]:
    """Per probability bin: rows, mean predicted p_late, observed late share (the reliability table)."""
    p = np.asarray(p_late, dtype="float64")
    which = np.clip((p * bins).astype("int64"), 0, bins - 1)
    table = []
    for b in range(bins):
        mine = which == b
        if mine.any():
            table.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "rows": int(mine.sum()),
                    "predicted": float(p[mine].mean()),
                    "observed": float(np.asarray(late, dtype=bool)[mine].mean()),
                }
            )
    return table


def promise_days(promise_s: np.ndarray) -> np.ndarray:
    """The SAST day each promise falls on (the bootstrap's blocks)."""
    local = from_epoch(promise_s).dt.tz_convert(SAST).dt.normalize()
    return pd.factorize(local)[0]


def bootstrap(
    late: np.ndarray,
    scores: dict[str, np.ndarray],
    blocks: np.ndarray,
    threshold: float,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Resample whole blocks (promise days) with replacement; per round, each scorer's AUC, AP,
    precision and recall. Returns arrays of shape (rounds,) under '<scorer>_<measure>'."""
    late = np.asarray(late, dtype=bool)
    count_blocks = int(blocks.max()) + 1 if len(blocks) else 0
    rng = np.random.default_rng(seed)
    ranked = {who: _ranked(score) for who, score in scores.items()}
    flagged = {who: np.asarray(score) >= threshold for who, score in scores.items()}
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        picks = np.bincount(rng.integers(0, count_blocks, count_blocks), minlength=count_blocks)
        weight = picks[blocks].astype("float64")
        for who, (groups, count) in ranked.items():
            auc, ap = _auc_ap(late, groups, count, weight)
            hits = float((weight * (flagged[who] & late)).sum())
            flagged_w = float((weight * flagged[who]).sum())
            late_w = float((weight * late).sum())
            out.setdefault(f"{who}_auc", []).append(auc)
            out.setdefault(f"{who}_ap", []).append(ap)
            out.setdefault(f"{who}_precision", []).append(hits / flagged_w if flagged_w else np.nan)
            out.setdefault(f"{who}_recall", []).append(hits / late_w if late_w else np.nan)
    return {key: np.asarray(values) for key, values in out.items()}


def interval(values: np.ndarray) -> list[float]:
    """The bootstrap's 5th and 95th percentile (NaN rounds ignored)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(values, INTERVAL)]


def band_coverage(predicted: pd.DataFrame, rows: Snapshots) -> dict[str, Any]:
    """Share of moments whose delivery fell inside the expected 10th-90th percentile range.

    Delivered orders count where they fell; an order still travelling counts as outside if
    it is already past the range's end, and is left out otherwise (not known yet).
    """
    low = predicted["low_days"].to_numpy()
    high = predicted["high_days"].to_numpy()
    actual = rows.remaining_days
    delivered = rows.delivered
    judged = delivered | (~delivered & ~np.isnan(actual) & (actual > high))
    inside = delivered & (actual >= low) & (actual <= high)
    count = int(judged.sum())
    return {
        "coverage": float(inside[judged].mean()) if count else None,
        "judged": count,
        "below": float((delivered & (actual < low))[judged].mean()) if count else None,
        "above": float((judged & ~inside & (actual > high))[judged].mean()) if count else None,
    }
