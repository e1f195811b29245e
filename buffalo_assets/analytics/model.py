"""The delay-risk model, its naive baseline, their training and evaluation, and scoring.

* `DelayModel`: scikit-learn gradient boosting on the as-of features of `features.py` and
  the text signals it learns itself (`TextSignals`): a classifier for p_late (delivered
  after the promise), calibrated on later orders (Platt scaling), and a regressor for the
  days still to go (on log days) with a 10th-90th percentile range from out-of-sample
  residuals.
* `StageBaseline`: the naive answer, median remaining time per current stage from history;
  its p_late is the share of history in that stage whose remaining time exceeded the time
  left to the promise, calibrated the same way.
* `train_delay_model`: a time split. With cut = as_of - test_days and vcut = cut -
  validation_days: fit on orders promised by vcut, calibrate on the orders promised in
  (vcut, cut], judge on the orders promised after cut, at every day of their journeys from
  dispatch until `horizon_days` before the promise. The model that is judged is the model
  that scores: there is no refit, so what the figures say is what is deployed.
  The figures (`measures.py`) are what the gate (`gate.py`) judges the new model by.
* `at_risk` follows one policy for model and baseline alike: p_late at or above
  `risk_threshold(false_alarm_cost)`, the probability above which alerting costs less than
  staying silent when a false alarm costs `false_alarm_cost` times a missed late parcel.

Models serialize to bytes (pickle; `model_version` = UTC training time + the bytes' hash)
so they are kept in PostgreSQL, never on a local disk.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics._time import DAY_S, HOUR_S, from_epoch
from buffalo_assets.analytics.drift import FeatureProfile
from buffalo_assets.analytics.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    History,
    NotEnoughHistory,
    Snapshots,
    in_flight_at,
    snapshots,
)
from buffalo_assets.analytics.measures import (
    band_coverage,
    bootstrap,
    interval,
    promise_days,
    reliability,
    scorer_metrics,
)
from buffalo_assets.analytics.reasons import explain
from buffalo_assets.analytics.stages import STAGES
from buffalo_assets.analytics.text_signals import TextSignals

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
    "unscored_reason",
    "reasons",
)
DEFAULT_HORIZON_DAYS = 3.0
DEFAULT_FALSE_ALARM_COST = 2.0
PATIENCE = 10  # trees without a lower loss on the validation orders before an estimator stops growing
# np.linspace(0, 1, 201), written out so that importing this module does not import numpy.
_QUANTILES = (*(i * (1 / 200) for i in range(200)), 1.0)


def risk_threshold(false_alarm_cost: float) -> float:
    """p_late at or above which an order is at risk, when a false alarm costs `false_alarm_cost` misses.

    Alerting an order with probability p costs (1 - p) x cost in expectation, staying
    silent p x 1: alerting is cheaper from p = cost / (1 + cost) on.
    """
    if not false_alarm_cost > 0:
        raise ValueError(f"the false-alarm cost must be above 0, got {false_alarm_cost}")
    return false_alarm_cost / (1.0 + false_alarm_cost)


# -- calibration ------------------------------------------------------------------------------


@dataclass
class PlattScaling:
    """p -> sigmoid(a x logit(p)): Platt scaling without its intercept (temperature scaling).

    The slope, fitted on later orders, corrects how sure the scores are and keeps their
    ranking. There is no intercept on purpose: it would carry the validation weeks' late
    share into every later week, and late shares move from week to week (on the development
    worlds an intercept made the test Brier score worse in every world, see docs/analytics.md).
    """

    a: float = 1.0

    @staticmethod
    def _logit(p: np.ndarray) -> np.ndarray:
        q = np.clip(np.asarray(p, dtype="float64"), 1e-4, 1 - 1e-4)
        return np.log(q / (1 - q))

    def fit(self, p: np.ndarray, late: np.ndarray) -> PlattScaling:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        late = np.asarray(late, dtype=bool)
        if late.all() or not late.any():
            raise NotEnoughHistory(
                f"cannot calibrate: the {len(late)} validation moments have only one outcome"
            )
        fitted = LogisticRegression(C=1e6, fit_intercept=False).fit(self._logit(p)[:, None], late)
        self.a = float(fitted.coef_[0, 0])
        return self

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.a * self._logit(p)))


# -- baseline --------------------------------------------------------------------------------


@dataclass
class StageBaseline:
    """Median remaining time per current stage, and the empirical chance of missing the promise."""

    quantiles: dict[int, np.ndarray] = field(default_factory=dict)  # stage code -> remaining-days quantiles
    overall: np.ndarray = field(default_factory=lambda: np.zeros(len(_QUANTILES)))
    calibration: PlattScaling = field(default_factory=PlattScaling)

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

    def predict_raw(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(uncalibrated p_late, expected remaining days) per row."""
        stage = features["stage_code"].to_numpy()
        days_left = features["hours_to_promise"].to_numpy() * HOUR_S / DAY_S
        p_late = np.empty(len(features))
        remaining = np.empty(len(features))
        for code in np.unique(stage):
            rows = stage == code if not np.isnan(code) else np.isnan(stage)
            q = self.quantiles.get(int(code), self.overall) if not np.isnan(code) else self.overall
            remaining[rows] = q[len(q) // 2]
            # Share of history whose remaining time exceeded the time left: 1 - CDF(days left).
            p_late[rows] = 1 - np.interp(days_left[rows], q, _QUANTILES, left=0.0, right=1.0)
        return p_late, remaining

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated p_late, expected remaining days) per row."""
        raw, remaining = self.predict_raw(features)
        return self.calibration(raw), remaining


# -- the model -------------------------------------------------------------------------------


@dataclass
class DelayModel:
    """Gradient-boosted p_late (calibrated) and remaining-days models over `feature_columns`."""

    feature_columns: tuple[str, ...] = ()
    dropped_features: dict[str, str] = field(default_factory=dict)
    max_iter: int = 250
    learning_rate: float = 0.08
    max_rows: int = 120_000  # training rows drawn at random: 100,000 orders train in well under a minute
    seed: int = 0
    # OpenMP threads for scikit-learn. One by default: on a busy shared host, idle OpenMP
    # threads spin-wait and a fit took 25x longer with two threads than with one.
    threads: int = 1
    classifier: Any = None
    regressor: Any = None
    calibration: PlattScaling = field(default_factory=PlattScaling)
    text: TextSignals = field(default_factory=TextSignals)
    # 10th/90th percentile of log1p(actual) - prediction per stage code (-1: all stages),
    # measured out of sample on validation rows: the expected range.
    range_offsets: dict[int, tuple[float, float]] = field(default_factory=dict)
    baseline: StageBaseline = field(default_factory=StageBaseline)
    trained_at: str = ""
    as_of: str = ""
    version: str = ""  # fixed at training: UTC time + hash of the fitted estimators
    training_rows: int = 0
    evaluation: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    # The training rows' picture (drift.py): typical values (for reasons.py) and the
    # distributions in-flight orders are compared with. None in models of earlier releases.
    profile: FeatureProfile | None = None

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
            "scoring": "loss",
            "n_iter_no_change": PATIENCE,
            "random_state": self.seed,
            **extra,
        }

    def design(self, history: History, features: pd.DataFrame, *, out_of_fold: bool = False) -> np.ndarray:
        """The matrix the estimators read: `features` plus this model's text signals, its columns."""
        frame = self.text.transform(history, features, out_of_fold=out_of_fold)
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"features lack the model's columns {missing}")
        return frame[list(self.feature_columns)].to_numpy(dtype="float64")

    def fit(
        self,
        history: History,
        train: Snapshots,
        columns: tuple[str, ...],
        validation: Snapshots | None = None,
        until_s: float | None = None,
    ) -> DelayModel:
        """Learn the text signals, drop columns without a value, fit (at most `max_rows` rows).

        Text signals read the events up to `until_s` (default: all of `history`): pass the end
        of the training window, so the validation and test weeks' texts never reach the model.

        With `validation` (later orders), each estimator stops adding trees once its loss on
        them has not improved for `PATIENCE` trees: a small history gets a simple model, a
        large one up to `max_iter` trees.
        """
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        with threadpool_limits(limits=self.threads):
            return self._fit(
                history, train, columns, validation, history.as_of_s if until_s is None else until_s
            )

    def _fit(
        self,
        history: History,
        train: Snapshots,
        columns: tuple[str, ...],
        validation: Snapshots | None,
        until_s: float,
    ) -> DelayModel:
        import numpy
        import sklearn  # type: ignore[import-untyped]
        from sklearn.ensemble import (  # type: ignore[import-untyped]
            HistGradientBoostingClassifier,
            HistGradientBoostingRegressor,
        )

        rows = np.arange(len(train.late))
        if len(rows) > self.max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, self.max_rows, replace=False))
        late = train.late[rows]
        if len(rows) == 0 or late.all() or not late.any():
            raise NotEnoughHistory(
                f"{len(rows)} training moments, {int(late.sum())} of them late: both outcomes are needed"
            )
        features = train.features.iloc[rows].reset_index(drop=True)
        position = pd.Index(history.order_ids).get_indexer(features["order_id"].astype(str))
        order_late = pd.Series(late).groupby(position).max()
        self.text = TextSignals.fit(
            history, order_late.index.to_numpy(), order_late.to_numpy(), until_s=until_s, seed=self.seed
        )
        frame = self.text.transform(history, features, out_of_fold=True)
        self.dropped_features = {}
        kept = []
        for column in columns:
            values = frame[column].to_numpy(dtype="float64") if column in frame.columns else np.empty(0)
            known = values[~np.isnan(values)]
            if column not in frame.columns:
                self.dropped_features[column] = "not computed"
            elif not len(known):
                self.dropped_features[column] = "no value in the training rows"
            elif np.all(known == known[0]):
                self.dropped_features[column] = "one value in every training row"
            else:
                kept.append(column)
        self.feature_columns = tuple(kept)
        x = frame[kept].to_numpy(dtype="float64")
        remaining = train.remaining_days[rows]
        known = ~np.isnan(remaining)
        check: dict[str, Any] = {}
        check_days: dict[str, Any] = {}
        if validation is not None and len(validation.late):
            x_check = self.design(history, validation.features)
            days_known = ~np.isnan(validation.remaining_days)
            check = {"X_val": x_check, "y_val": validation.late}
            if days_known.any():
                days = np.log1p(np.clip(validation.remaining_days[days_known], 0, None))
                check_days = {"X_val": x_check[days_known], "y_val": days}
        self.classifier = HistGradientBoostingClassifier(**self._params(early_stopping=bool(check))).fit(
            x, late, **check
        )
        # Squared error on log days: a median-like answer at a fraction of the cost of the
        # absolute-error and quantile losses (which re-sort every leaf at every iteration).
        self.regressor = HistGradientBoostingRegressor(**self._params(early_stopping=bool(check_days))).fit(
            x[known], np.log1p(np.clip(remaining[known], 0, None)), **check_days
        )
        self.baseline = StageBaseline().fit(train)
        self.text = self.text.without_folds()
        self.training_rows = int(len(rows))
        self.trained_at = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.libraries = {"scikit-learn": sklearn.__version__, "numpy": numpy.__version__}
        digest = hashlib.sha256(pickle.dumps((self.classifier, self.regressor))).hexdigest()
        self.version = f"{self.trained_at}-{digest[:10]}"
        return self

    def predict(self, history: History, features: pd.DataFrame) -> pd.DataFrame:
        """p_late (calibrated), raw score and remaining days (median, low, high) per row of `features`."""
        if self.classifier is None:
            raise ValueError("the delay model is not trained")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            return self._predict(history, features)

    def _predict(self, history: History, features: pd.DataFrame) -> pd.DataFrame:
        x = self.design(history, features) if len(features) else np.empty((0, len(self.feature_columns)))
        raw = self.classifier.predict_proba(x)[:, 1] if len(x) else np.empty(0)
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
                "p_late": self.calibration(raw) if len(raw) else raw,
                "raw": raw,
                "remaining_days": remaining,
                "low_days": np.minimum(low, remaining),
                "high_days": np.maximum(high, remaining),
            },
            index=features.index,
        )

    def calibrate_ranges(self, history: History, rows: Snapshots) -> dict[int, tuple[float, float]]:
        """Per-stage 10th/90th percentile residuals (log days) on rows the model did not train on.

        Orders still travelling count with their lower bound (time so far): left out, the
        slowest validation orders would be missing and the late end of the range too early.
        """
        known = ~np.isnan(rows.remaining_days)
        if not known.any():
            return {}
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            predicted = self.regressor.predict(self.design(history, rows.features[known]))
        return range_offsets(
            predicted, rows.remaining_days[known], rows.features["stage_code"].to_numpy()[known]
        )

    def to_bytes(self) -> bytes:
        """The whole model (estimators, calibration, text signals, baseline, evaluation) as bytes."""
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


def range_offsets(
    predicted_log_days: np.ndarray, remaining_days: np.ndarray, stage: np.ndarray
) -> dict[int, tuple[float, float]]:
    """10th/90th percentile of log1p(actual days) - predicted, per stage code (-1: all stages)."""
    residual = np.log1p(np.clip(remaining_days, 0, None)) - predicted_log_days
    offsets = {-1: (float(np.quantile(residual, 0.1)), float(np.quantile(residual, 0.9)))}
    for code in np.unique(stage[~np.isnan(stage)]):
        mine = residual[stage == code]
        if len(mine) >= 30:
            offsets[int(code)] = (float(np.quantile(mine, 0.1)), float(np.quantile(mine, 0.9)))
    return offsets


@dataclass
class TrainingResult:
    model: DelayModel
    evaluation: dict[str, Any]
    test: Snapshots
    seconds: float


def _window(rows: Snapshots) -> dict[str, Any]:
    return {
        "orders": rows.orders,
        "moments": int(len(rows.late)),
        "late_share": float(rows.late.mean()) if len(rows.late) else None,
    }


def train_delay_model(
    history: History,
    *,
    test_days: float = 14.0,
    validation_days: float = 14.0,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    false_alarm_cost: float = DEFAULT_FALSE_ALARM_COST,
    max_per_order: int = 16,
    model: DelayModel | None = None,
    columns: tuple[str, ...] | None = None,
    extra_features: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> TrainingResult:
    """Train on the oldest orders, calibrate on the next, measure on the newest (see the module).

    `extra_features`, a function of snapshot rows (order_id, at, ...) returning columns for
    each row, adds columns (the benchmark's knowable ceiling and oracle); name them in
    `columns`. Raises `NotEnoughHistory` when a window lacks the outcomes it needs.
    """
    started = time.perf_counter()
    template = model or DelayModel()
    cut = history.as_of_s - test_days * DAY_S
    vcut = cut - validation_days * DAY_S
    seed = template.seed

    def with_extra(features: pd.DataFrame) -> pd.DataFrame:
        if extra_features is not None:
            added = extra_features(features)
            for column in added.columns:
                features[column] = added[column].to_numpy(dtype="float64")
        return features

    def rows(**kwargs: Any) -> Snapshots:
        snap = snapshots(
            history, max_per_order=max_per_order, max_rows=template.max_rows, seed=seed, **kwargs
        )
        with_extra(snap.features)
        return snap

    # Each window knows deliveries only up to its own end (`known_by_s`): no training or
    # validation row learns how long a parcel took from a delivery in a later window.
    train = rows(promised_by_s=vcut, known_by_s=vcut)
    validation = rows(promised_after_s=vcut, promised_by_s=cut, known_by_s=cut)
    test = rows(promised_after_s=cut, from_dispatch=True, min_hours_to_promise=horizon_days * 24)
    for name, window in (("training", train), ("validation", validation)):
        if not len(window.late) or window.late.all() or not window.late.any():
            raise NotEnoughHistory(
                f"the {name} window has {window.orders} orders ({int(window.late.sum())} of "
                f"{len(window.late)} moments late): orders of both outcomes are needed"
            )
    fitted = DelayModel(
        max_iter=template.max_iter,
        learning_rate=template.learning_rate,
        max_rows=template.max_rows,
        seed=seed,
        threads=template.threads,
    )
    fitted.fit(history, train, columns or FEATURE_COLUMNS, validation, until_s=vcut)
    raw = fitted.predict(history, validation.features)["raw"].to_numpy()
    fitted.calibration = PlattScaling().fit(raw, validation.late)
    base_raw, _ = fitted.baseline.predict_raw(validation.features)
    fitted.baseline.calibration = PlattScaling().fit(base_raw, validation.late)
    fitted.range_offsets = fitted.calibrate_ranges(history, validation)
    fitted.profile = training_profile(fitted, history, train, vcut, with_extra)
    fitted.as_of = from_epoch(np.array([history.as_of_s])).iloc[0].isoformat()
    threshold = risk_threshold(false_alarm_cost)
    evaluation: dict[str, Any] = {
        "as_of": fitted.as_of,
        "cut": from_epoch(np.array([cut])).iloc[0].isoformat(),
        "validation_cut": from_epoch(np.array([vcut])).iloc[0].isoformat(),
        "horizon_days": horizon_days,
        "test_days": test_days,
        "validation_days": validation_days,
        "false_alarm_cost": false_alarm_cost,
        "threshold": threshold,
        "train": _window(train),
        "validation": _window(validation),
        "test": {
            **_window(test),
            "late_orders": _orders_with(test, True),
            "on_time_orders": _orders_with(test, False),
            "promise_days": int(len(np.unique(promise_days(test.promise_s)))) if len(test.late) else 0,
        },
        "features": {"used": list(fitted.feature_columns), "dropped": dict(fitted.dropped_features)},
        # Trees each estimator kept: it stops growing when the validation orders stop gaining.
        "trees": {"classifier": int(fitted.classifier.n_iter_), "regressor": int(fitted.regressor.n_iter_)},
        "libraries": dict(fitted.libraries),
    }
    if len(test.late):
        evaluation |= evaluate(fitted, history, test, threshold)
    fitted.evaluation = evaluation
    return TrainingResult(
        model=fitted, evaluation=evaluation, test=test, seconds=time.perf_counter() - started
    )


PROFILE_DAYS = 14  # daily cross-sections of the orders in flight at the end of the training window


def training_profile(
    model: DelayModel,
    history: History,
    train: Snapshots,
    until_s: float,
    with_extra: Callable[[pd.DataFrame], pd.DataFrame] = lambda features: features,
) -> FeatureProfile:
    """The training window's picture for drift and reasons (`drift.FeatureProfile`).

    Distributions come from what scoring sees: the orders in flight at one moment, taken
    daily over the last `PROFILE_DAYS` of the training window; the typical values and the
    range of the one-valued (rolling) features from the training rows. `with_extra` adds to
    those rows whatever columns the training rows were given (`train_delay_model`'s
    `extra_features`), so a model that reads them can be profiled.
    """
    from threadpoolctl import threadpool_limits

    moments = [until_s - k * DAY_S for k in range(PROFILE_DAYS)]
    population = with_extra(pd.concat([in_flight_at(history, at) for at in moments], ignore_index=True))
    with threadpool_limits(limits=model.threads):
        x_rows = model.design(history, train.features)
        x_population = model.design(history, population)
    late = pd.Series(train.late).groupby(train.features["order_id"].to_numpy()).max()
    return FeatureProfile.of(
        x_rows,
        model.feature_columns,
        set(CATEGORICAL_FEATURES),
        float(late.mean()) if len(late) else None,
        population=x_population,
    )


def _orders_with(rows: Snapshots, late: bool) -> int:
    per_order = pd.Series(rows.late).groupby(rows.features["order_id"].to_numpy()).max()
    return int((per_order == late).sum())


def evaluate(model: DelayModel, history: History, test: Snapshots, threshold: float) -> dict[str, Any]:
    """Model and baseline on the test moments: measures, intervals, reliability, band coverage."""
    predicted = model.predict(history, test.features)
    base_p, base_remaining = model.baseline.predict(test.features)
    actual = test.remaining_days
    model_err = np.where(test.delivered, np.abs(predicted["remaining_days"].to_numpy() - actual), np.nan)
    base_err = np.where(test.delivered, np.abs(base_remaining - actual), np.nan)
    p = predicted["p_late"].to_numpy()
    blocks = promise_days(test.promise_s)
    rounds = bootstrap(test.late, {"model": p, "baseline": base_p}, blocks, threshold)
    out: dict[str, Any] = {
        "model": scorer_metrics(test.late, p, threshold, model_err),
        "baseline": scorer_metrics(test.late, base_p, threshold, base_err),
        "reliability": {"model": reliability(test.late, p), "baseline": reliability(test.late, base_p)},
        "band": band_coverage(predicted, test),
    }
    for who in ("model", "baseline"):
        out[who]["intervals"] = {
            m: interval(rounds[f"{who}_{m}"]) for m in ("auc", "ap", "precision", "recall")
        }
    out["comparison"] = {
        f"{m}_vs_baseline": [
            float(out["model"][m] - out["baseline"][m]),
            *interval(rounds[f"model_{m}"] - rounds[f"baseline_{m}"]),
        ]
        for m in ("auc", "ap")
    }
    return out


# -- scoring ---------------------------------------------------------------------------------


def score_in_flight(
    model: DelayModel,
    history: History,
    features: pd.DataFrame,
    threshold: float,
    scored_at: datetime | None = None,
    *,
    reasons: bool = True,
    latest_texts: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """`analytics.order_delay_risk` rows for in-flight orders' features (from `in_flight_features`).

    An order already past its promise is late whatever the model says: p_late 1, at risk.
    Expected dates never lie before the scoring moment. Each order at risk and not yet past
    its promise gets its `reasons` from the model's own attributions (`reasons.py`);
    `latest_texts` (order id -> newest tracking text) words the tracking-news reason.
    """
    scored = pd.Timestamp(scored_at or datetime.now(UTC)).tz_convert("UTC")
    predicted = model.predict(history, features)
    at = pd.to_datetime(features["at"], utc=True)
    overdue = features["hours_to_promise"].to_numpy() < 0
    p_late = np.clip(np.where(overdue, 1.0, predicted["p_late"].to_numpy()), 0.0, 1.0)
    at_risk = p_late >= threshold
    why = np.full(len(features), None, dtype=object)
    why[overdue] = "past the promised date"
    explained = at_risk & ~overdue
    if reasons and explained.any():
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=model.threads):
            why[explained] = explain(model, history, features[explained], latest_texts)

    def after(days: pd.Series) -> pd.Series:
        return (at + pd.to_timedelta(days.to_numpy() * DAY_S, unit="s")).dt.floor("s")

    return pd.DataFrame(
        {
            "order_id": features["order_id"].astype(str).to_numpy(),
            "promised_delivery_at": pd.to_datetime(features["promised_delivery_at"], utc=True).to_numpy(),
            "expected_delivery_at": after(predicted["remaining_days"]).to_numpy(),
            "p_late": p_late,
            "at_risk": at_risk,
            "scored_at": scored,
            "model_version": model.version,
            "expected_low_at": after(predicted["low_days"]).to_numpy(),
            "expected_high_at": after(predicted["high_days"]).to_numpy(),
            "unscored_reason": None,
            "reasons": why,
        }
    )[list(DELAY_RISK_COLUMNS)]


def unscored_in_flight(
    features: pd.DataFrame, reason: str, scored_at: datetime | None = None
) -> pd.DataFrame:
    """The in-flight orders without a score (no champion yet): promise known, p_late empty, why."""
    scored = pd.Timestamp(scored_at or datetime.now(UTC)).tz_convert("UTC")
    return pd.DataFrame(
        {
            "order_id": features["order_id"].astype(str).to_numpy(),
            "promised_delivery_at": pd.to_datetime(features["promised_delivery_at"], utc=True).to_numpy(),
            "expected_delivery_at": pd.NaT,
            "p_late": np.nan,
            "at_risk": None,
            "scored_at": scored,
            "model_version": None,
            "expected_low_at": pd.NaT,
            "expected_high_at": pd.NaT,
            "unscored_reason": reason,
            "reasons": None,
        }
    )[list(DELAY_RISK_COLUMNS)]


def stage_name(code: float) -> str:
    """The stage a feature's stage code stands for."""
    return STAGES[int(code)] if not np.isnan(code) and 0 <= int(code) < len(STAGES) else "unknown"
