"""The delay-risk model, its naive baseline, their evaluation and scoring.

* `DelayModel`: scikit-learn gradient boosting on the as-of features of `features.py`: a
  classifier for p_late (delivered after the promise) and a regressor for the days still to
  go (on log days), with a 10th-90th percentile range from out-of-sample residuals.
* `StageBaseline`: the naive answer, median remaining time per current stage from history;
  its p_late is the share of history in that stage whose remaining time exceeded the time
  left to the promise.
* `train_delay_model`: time split. With cut = as_of - test_days and vcut = cut -
  validation_days: fit on orders promised by vcut, choose each `at_risk` threshold on the
  orders promised in (vcut, cut] (never the test set), measure on the orders promised after
  cut, then refit on everything with the same settings for scoring.
  Validation and test rows are moments at least `horizon_days` before the promise: the
  question people ask is "will it be late?" while something can still be done.

Models serialize to bytes (pickle; `model_version` = UTC training time + the bytes' hash)
so they are kept in PostgreSQL, never on a local disk.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics._time import DAY_S, HOUR_S, from_epoch
from buffalo_assets.analytics.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    History,
    Snapshots,
    snapshots,
)
from buffalo_assets.analytics.stages import STAGES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

DELAY_RISK_COLUMNS: tuple[str, ...] = (
    "order_id",
    "promised_delivery_at",
    "expected_delivery_at",
    "p_late",
    "at_risk",
    "scored_at",
    "model_version",
    "expected_low_at",
    "expected_high_at",
)
DEFAULT_MIN_PRECISION = 0.8  # validation precision the at_risk threshold must keep
MIN_FLAGGED_SHARE = 0.05  # a threshold must flag at least this share of the late validation rows
DEFAULT_HORIZON_DAYS = 3.0
# np.linspace(0, 1, 201), written out so that importing this module does not import numpy.
_QUANTILES = (*(i * (1 / 200) for i in range(200)), 1.0)


def classification_metrics(
    late: np.ndarray, p_late: np.ndarray, threshold: float, abs_error_days: np.ndarray | None = None
) -> dict[str, float]:
    """AUC, precision/recall/F1 at `threshold` (at_risk = p_late > threshold), MAE in days."""
    from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]

    late = np.asarray(late, dtype=bool)
    flagged = np.asarray(p_late) > threshold
    hits = float((flagged & late).sum())
    precision = hits / flagged.sum() if flagged.any() else float("nan")
    recall = hits / late.sum() if late.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    auc = float(roc_auc_score(late, p_late)) if 0 < late.sum() < len(late) else float("nan")
    errors = abs_error_days[~np.isnan(abs_error_days)] if abs_error_days is not None else np.empty(0)
    return {
        "auc": auc,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "mae_days": float(errors.mean()) if len(errors) else float("nan"),
        "threshold": float(threshold),
        "rows": int(len(late)),
        "late_share": float(late.mean()) if len(late) else float("nan"),
        "flagged": int(flagged.sum()),
    }


def choose_threshold(
    late: np.ndarray, p_late: np.ndarray, min_precision: float = DEFAULT_MIN_PRECISION
) -> float:
    """The threshold with the best F1 among those keeping precision >= min_precision.

    Only thresholds that flag at least `MIN_FLAGGED_SHARE` of the late rows (and 10 rows)
    count, so a precision measured on a handful of rows does not decide. When no threshold
    reaches `min_precision`, the one with the best F1 overall: where precision is out of
    reach, flagging what is most likely late still beats flagging nothing.
    """
    late = np.asarray(late, dtype=bool)
    p = np.asarray(p_late, dtype="float64")
    if not len(p) or not late.any():
        return 0.5
    min_flagged = max(10, int(np.ceil(MIN_FLAGGED_SHARE * late.sum())))
    candidates = np.unique(np.quantile(p, np.linspace(0.0, 0.995, 400)))
    best: tuple[float, float] | None = None
    fallback: tuple[float, float] = (-1.0, 0.5)
    for threshold in candidates:
        flagged = p > threshold
        if flagged.sum() < min(min_flagged, len(p)):
            continue
        hits = (flagged & late).sum()
        precision = hits / flagged.sum()
        recall = hits / late.sum()
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        fallback = max(fallback, (f1, float(threshold)))
        if precision >= min_precision and (best is None or f1 > best[0]):
            best = (f1, float(threshold))
    return (best or fallback)[1]


@dataclass
class StageBaseline:
    """Median remaining time per current stage, and the empirical chance of missing the promise."""

    quantiles: dict[int, np.ndarray] = field(default_factory=dict)  # stage code -> remaining-days quantiles
    overall: np.ndarray = field(default_factory=lambda: np.zeros(len(_QUANTILES)))
    threshold: float = 0.5

    def fit(self, train: Snapshots) -> StageBaseline:
        known = ~np.isnan(train.remaining_days)
        stage = train.features["stage_code"].to_numpy()[known]
        remaining = train.remaining_days[known]
        self.overall = np.quantile(remaining, _QUANTILES) if len(remaining) else self.overall
        self.quantiles = {
            int(code): np.quantile(remaining[stage == code], _QUANTILES)
            for code in np.unique(stage[~np.isnan(stage)])
            if (stage == code).sum() >= 20
        }
        return self

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(p_late, expected remaining days) per row."""
        stage = features["stage_code"].to_numpy()
        days_left = features["hours_to_promise"].to_numpy() * HOUR_S / DAY_S
        p_late = np.empty(len(features))
        remaining = np.empty(len(features))
        for code in np.unique(stage):
            rows = stage == code
            q = self.quantiles.get(int(code), self.overall) if not np.isnan(code) else self.overall
            remaining[rows] = q[len(q) // 2]
            # Share of history whose remaining time exceeded the time left: 1 - CDF(days left).
            p_late[rows] = 1 - np.interp(days_left[rows], q, _QUANTILES, left=0.0, right=1.0)
        return p_late, remaining


@dataclass
class DelayModel:
    """Gradient-boosted p_late and remaining-days models over `feature_columns`."""

    feature_columns: tuple[str, ...] = FEATURE_COLUMNS
    max_iter: int = 250
    learning_rate: float = 0.08
    max_rows: int = 120_000  # training rows drawn at random: 100,000 orders train in well under a minute
    seed: int = 0
    # OpenMP threads for scikit-learn. One by default: on a busy shared host, idle OpenMP
    # threads spin-wait and a fit took 25x longer with two threads than with one.
    threads: int = 1
    threshold: float = 0.5
    classifier: Any = None
    regressor: Any = None
    # 10th/90th percentile of log1p(actual) - prediction per stage code (-1: all stages),
    # measured out of sample on validation rows: the expected range.
    range_offsets: dict[int, tuple[float, float]] = field(default_factory=dict)
    baseline: StageBaseline = field(default_factory=StageBaseline)
    trained_at: str = ""
    version: str = ""  # fixed at training: UTC time + hash of the fitted estimators
    training_rows: int = 0
    evaluation: dict[str, Any] = field(default_factory=dict)

    def _params(self, **extra: Any) -> dict[str, Any]:
        categorical = [c in CATEGORICAL_FEATURES for c in self.feature_columns]
        return {
            "max_iter": self.max_iter,
            "learning_rate": self.learning_rate,
            "max_leaf_nodes": 31,
            "min_samples_leaf": 40,
            "l2_regularization": 1.0,
            "categorical_features": categorical,
            "early_stopping": False,
            "random_state": self.seed,
            **extra,
        }

    def _matrix(self, features: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.feature_columns if c not in features.columns]
        if missing:
            raise ValueError(f"features lack the model's columns {missing}")
        return features[list(self.feature_columns)].to_numpy(dtype="float64")

    def fit(self, train: Snapshots) -> DelayModel:
        """Fit on labelled snapshots (at most `max_rows`, drawn at random)."""
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        with threadpool_limits(limits=self.threads):
            return self._fit(train)

    def _fit(self, train: Snapshots) -> DelayModel:
        from sklearn.ensemble import (  # type: ignore[import-untyped]
            HistGradientBoostingClassifier,
            HistGradientBoostingRegressor,
        )

        rows = np.arange(len(train.late))
        if len(rows) > self.max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, self.max_rows, replace=False))
        if len(rows) == 0 or train.late[rows].all() or not train.late[rows].any():
            raise ValueError(
                f"cannot train the delay model: {len(rows)} labelled moments, "
                f"{int(train.late[rows].sum())} of them late; both outcomes are needed"
            )
        x = self._matrix(train.features.iloc[rows])
        y = train.late[rows]
        self.classifier = HistGradientBoostingClassifier(**self._params()).fit(x, y)
        remaining = train.remaining_days[rows]
        known = ~np.isnan(remaining)
        # Squared error on log days: a median-like answer at a fraction of the cost of the
        # absolute-error and quantile losses (which re-sort every leaf at every iteration).
        self.regressor = HistGradientBoostingRegressor(**self._params()).fit(
            x[known], np.log1p(np.clip(remaining[known], 0, None))
        )
        self.baseline = StageBaseline(threshold=self.baseline.threshold).fit(train)
        self.training_rows = int(len(rows))
        self.trained_at = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        digest = hashlib.sha256(pickle.dumps((self.classifier, self.regressor))).hexdigest()
        self.version = f"{self.trained_at}-{digest[:10]}"
        return self

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """p_late and remaining days (median, low, high) per row of `features`."""
        if self.classifier is None:
            raise ValueError("the delay model is not trained")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            return self._predict(features)

    def _predict(self, features: pd.DataFrame) -> pd.DataFrame:
        x = self._matrix(features)
        p_late = self.classifier.predict_proba(x)[:, 1] if len(x) else np.empty(0)
        log_days = self.regressor.predict(x) if len(x) else np.empty(0)
        remaining = np.expm1(np.clip(log_days, 0, None))
        stage = features["stage_code"].to_numpy()
        overall = self.range_offsets.get(-1, (0.0, 0.0))
        offsets = np.array(
            [self.range_offsets.get(int(c), overall) if not np.isnan(c) else overall for c in stage]
        ).reshape(-1, 2)
        low = np.expm1(np.clip(log_days + offsets[:, 0], 0, None))
        high = np.expm1(np.clip(log_days + offsets[:, 1], 0, None))
        return pd.DataFrame(
            {
                "p_late": p_late,
                "remaining_days": remaining,
                "low_days": np.minimum(low, remaining),
                "high_days": np.maximum(high, remaining),
            },
            index=features.index,
        )

    def calibrate_ranges(self, rows: Snapshots) -> dict[int, tuple[float, float]]:
        """Per-stage 10th/90th percentile residuals (log days) on rows the model did not train on.

        Orders still travelling count with their lower bound (time so far): left out, the
        slowest validation orders would be missing and the late end of the range too early.
        """
        known = ~np.isnan(rows.remaining_days)
        if not known.any():
            return {}
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            predicted = self.regressor.predict(self._matrix(rows.features[known]))
        residual = np.log1p(np.clip(rows.remaining_days[known], 0, None)) - predicted
        stage = rows.features["stage_code"].to_numpy()[known]
        offsets = {-1: (float(np.quantile(residual, 0.1)), float(np.quantile(residual, 0.9)))}
        for code in np.unique(stage[~np.isnan(stage)]):
            mine = residual[stage == code]
            if len(mine) >= 30:
                offsets[int(code)] = (float(np.quantile(mine, 0.1)), float(np.quantile(mine, 0.9)))
        return offsets

    def to_bytes(self) -> bytes:
        """The whole model (estimators, baseline, threshold, evaluation) as bytes for a bytea column."""
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> DelayModel:
        """A model stored by `to_bytes` (only ever our own rows in PostgreSQL: pickle is trusted here)."""
        model = pickle.loads(data)  # noqa: S301 - bytes written by to_bytes into our own database
        if not isinstance(model, DelayModel):
            raise ValueError(f"stored model is a {type(model).__name__}, not a DelayModel")
        return model


@dataclass
class TrainingResult:
    model: DelayModel
    evaluation: dict[str, Any]
    seconds: float


def _evaluate(model: DelayModel, rows: Snapshots) -> dict[str, dict[str, float]]:
    predicted = model.predict(rows.features)
    base_p, base_remaining = model.baseline.predict(rows.features)
    actual = rows.remaining_days
    delivered = rows.delivered
    model_err = np.where(delivered, np.abs(predicted["remaining_days"].to_numpy() - actual), np.nan)
    base_err = np.where(delivered, np.abs(base_remaining - actual), np.nan)
    return {
        "model": classification_metrics(
            rows.late, predicted["p_late"].to_numpy(), model.threshold, model_err
        ),
        "baseline": classification_metrics(rows.late, base_p, model.baseline.threshold, base_err),
    }


def train_delay_model(
    history: History,
    *,
    test_days: float = 10.0,
    validation_days: float = 10.0,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    min_precision: float = DEFAULT_MIN_PRECISION,
    max_per_order: int = 14,
    model: DelayModel | None = None,
    extra_features: pd.DataFrame | Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    refit: bool = True,
) -> TrainingResult:
    """Train, choose thresholds on validation, evaluate on the later test orders, refit on all.

    `extra_features` (indexed by order_id) adds per-order columns to every snapshot; the
    benchmark's oracle uses it for the sandbox's hidden plan. It may also be a function of
    the snapshot rows (order_id, at, ...) returning columns for each row, for facts that
    depend on the moment (the benchmark's knowable ceiling). The returned model carries the
    evaluation (test metrics of model and baseline) in `model.evaluation`.
    """
    started = time.perf_counter()
    template = model or DelayModel()
    cut = history.as_of_s - test_days * DAY_S
    vcut = cut - validation_days * DAY_S
    horizon_h = horizon_days * 24
    seed = template.seed

    def rows(**kwargs: Any) -> Snapshots:
        snap = snapshots(
            history, max_per_order=max_per_order, max_rows=template.max_rows, seed=seed, **kwargs
        )
        if callable(extra_features):
            added = extra_features(snap.features)
            for column in added.columns:
                snap.features[column] = added[column].to_numpy(dtype="float64")
        elif extra_features is not None:
            joined = extra_features.reindex(snap.features["order_id"].to_numpy())
            for column in extra_features.columns:
                snap.features[column] = joined[column].to_numpy(dtype="float64")
        return snap

    def fresh() -> DelayModel:
        return DelayModel(
            feature_columns=template.feature_columns,
            max_iter=template.max_iter,
            learning_rate=template.learning_rate,
            max_rows=template.max_rows,
            seed=seed,
            threads=template.threads,
        )

    train = rows(promised_by_s=vcut)
    validation = rows(
        promised_after_s=vcut + horizon_h * HOUR_S,
        promised_by_s=cut,
        not_before_s=vcut,
        min_hours_to_promise=horizon_h,
    )
    test = rows(
        promised_after_s=cut + horizon_h * HOUR_S,
        not_before_s=cut,
        min_hours_to_promise=horizon_h,
    )
    evaluated = fresh()
    evaluated.fit(train)
    predicted = evaluated.predict(validation.features)
    evaluated.threshold = choose_threshold(validation.late, predicted["p_late"].to_numpy(), min_precision)
    base_p, _ = evaluated.baseline.predict(validation.features)
    evaluated.baseline.threshold = choose_threshold(validation.late, base_p, min_precision)
    evaluated.range_offsets = evaluated.calibrate_ranges(validation)
    evaluation: dict[str, Any] = {
        **_evaluate(evaluated, test),
        "validation": _evaluate(evaluated, validation),
        "train_rows": int(len(train.late)),
        "validation_rows": int(len(validation.late)),
        "test_rows": int(len(test.late)),
        "cut": from_epoch(np.array([cut])).iloc[0].isoformat(),
        "validation_cut": from_epoch(np.array([vcut])).iloc[0].isoformat(),
        "horizon_days": horizon_days,
    }
    if refit:
        final = fresh()
        final.fit(rows(promised_by_s=history.as_of_s))
    else:
        final = evaluated
    final.threshold = evaluated.threshold
    final.baseline.threshold = evaluated.baseline.threshold
    final.range_offsets = evaluated.range_offsets
    final.evaluation = evaluation
    return TrainingResult(model=final, evaluation=evaluation, seconds=time.perf_counter() - started)


def score_in_flight(
    model: DelayModel, features: pd.DataFrame, scored_at: datetime | None = None
) -> pd.DataFrame:
    """`analytics.order_delay_risk` rows for in-flight orders' features (from `in_flight_features`).

    An order already past its promise is late whatever the model says: p_late 1, at risk.
    Expected dates never lie before the scoring moment.
    """
    scored = pd.Timestamp(scored_at or datetime.now(UTC)).tz_convert("UTC")
    predicted = model.predict(features)
    at = pd.to_datetime(features["at"], utc=True)
    overdue = features["hours_to_promise"].to_numpy() < 0
    p_late = np.where(overdue, 1.0, predicted["p_late"].to_numpy())

    def after(days: pd.Series) -> pd.Series:
        return (at + pd.to_timedelta(days.to_numpy() * DAY_S, unit="s")).dt.floor("s")

    return pd.DataFrame(
        {
            "order_id": features["order_id"].astype(str).to_numpy(),
            "promised_delivery_at": pd.to_datetime(features["promised_delivery_at"], utc=True).to_numpy(),
            "expected_delivery_at": after(predicted["remaining_days"]).to_numpy(),
            "p_late": np.clip(p_late, 0.0, 1.0),
            "at_risk": p_late > model.threshold,
            "scored_at": scored,
            "model_version": model.version,
            "expected_low_at": after(predicted["low_days"]).to_numpy(),
            "expected_high_at": after(predicted["high_days"]).to_numpy(),
        }
    )[list(DELAY_RISK_COLUMNS)]


def stage_name(code: float) -> str:
    """The stage a feature's stage code stands for."""
    return STAGES[int(code)] if not np.isnan(code) and 0 <= int(code) < len(STAGES) else "unknown"
