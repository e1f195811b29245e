"""The gate: a newly trained delay model is a challenger until it is judged, and only a winner scores.

`judge` compares the challenger with the naive baseline and with the champion (the model
that scores now) on the challenger's test moments, on two threshold-free measures: ROC AUC
and average precision, each difference with a bootstrap interval over promise days. It is
promoted (`status` champion) only if it clearly beats the baseline on both and the champion
is not clearly better on either; otherwise it is rejected and kept with the reason. With too
few test orders it is not judged at all, and a model that is not judged never scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics.features import TEXT_FEATURES, History
from buffalo_assets.analytics.measures import bootstrap, interval, promise_days, scorer_metrics
from buffalo_assets.analytics.model import DelayModel, TrainingResult
from buffalo_assets.analytics.text_signals import TextSignals

if TYPE_CHECKING:
    import pandas as pd

# Below these a challenger is not judged (and so never scores): too few test orders, or
# too few of either outcome, for a comparison to mean anything.
MIN_TEST_ORDERS = 100
MIN_TEST_OUTCOME_ORDERS = 20
# The bootstrap resamples promise days: with fewer, its intervals mean little.
MIN_TEST_PROMISE_DAYS = 7


@dataclass
class Verdict:
    """What the gate decided about a challenger, and why."""

    status: str  # champion (promoted), rejected, not_judged
    reason: str
    judged: bool
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.status == "champion"


def judge(
    result: TrainingResult,
    history: History,
    champion: DelayModel | None,
    champion_version: str | None = None,
    champion_problem: str | None = None,
) -> Verdict:
    """Promote the challenger only if it beats the baseline and is not worse than the champion.

    Both on AUC and average precision of the test moments: beating means the bootstrap's 5th
    percentile of the difference is above 0; not worse means its 95th percentile is at least
    0 (the champion is not clearly better). The champion scores the same test moments with
    its own text signals. A champion that cannot be compared (this release cannot read its
    bytes: `champion_problem`; or a feature it needs is gone) cannot keep scoring either: the
    challenger is then judged against the baseline alone, and the verdict says so.
    """
    evaluation = result.evaluation
    test = evaluation["test"]
    if (
        test["orders"] < MIN_TEST_ORDERS
        or min(test["late_orders"], test["on_time_orders"]) < MIN_TEST_OUTCOME_ORDERS
        or test["promise_days"] < MIN_TEST_PROMISE_DAYS
    ):
        return Verdict(
            "not_judged",
            f"not judged: {test['orders']} test orders ({test['late_orders']} late, "
            f"{test['on_time_orders']} on time) promised on {test['promise_days']} days; at least "
            f"{MIN_TEST_ORDERS}, with {MIN_TEST_OUTCOME_ORDERS} of each outcome, on "
            f"{MIN_TEST_PROMISE_DAYS} days, are needed",
            judged=False,
        )
    comparison = evaluation["comparison"]
    beats = all(comparison[f"{m}_vs_baseline"][1] > 0 for m in ("auc", "ap"))
    figures = {
        m: f"{evaluation['model'][m]:.3f} vs baseline {evaluation['baseline'][m]:.3f} "
        f"(difference {comparison[f'{m}_vs_baseline'][0]:+.3f}, 90% interval "
        f"{comparison[f'{m}_vs_baseline'][1]:+.3f} to {comparison[f'{m}_vs_baseline'][2]:+.3f})"
        for m in ("auc", "ap")
    }
    reasons = [f"AUC {figures['auc']}", f"AP {figures['ap']}"]
    not_worse = True
    if champion_problem is not None:
        reasons.append(f"champion {champion_version} {champion_problem}: not compared")
    elif champion is not None:
        compared = _against_champion(result, history, champion, evaluation["threshold"])
        if compared is None:
            reasons.append(f"champion {champion_version} cannot score today's features: not compared")
        else:
            evaluation["champion"] = {"version": champion_version, **compared["metrics"]}
            comparison |= compared["comparison"]
            not_worse = all(comparison[f"{m}_vs_champion"][2] >= 0 for m in ("auc", "ap"))
            reasons.append(
                "vs champion "
                + ", ".join(
                    f"{m.upper()} {comparison[f'{m}_vs_champion'][0]:+.3f} "
                    f"({comparison[f'{m}_vs_champion'][1]:+.3f} to {comparison[f'{m}_vs_champion'][2]:+.3f})"
                    for m in ("auc", "ap")
                )
            )
    if beats and not_worse:
        status, verdict = "champion", "promoted: beats the baseline"
        if champion is not None:
            verdict += " and is not worse than the champion"
    elif not beats:
        status, verdict = "rejected", "rejected: does not clearly beat the baseline"
    else:
        status, verdict = "rejected", "rejected: the champion is clearly better"
    return Verdict(status, f"{verdict}; " + "; ".join(reasons), judged=True, figures=figures)


def _against_champion(
    result: TrainingResult, history: History, champion: DelayModel, threshold: float
) -> dict[str, Any] | None:
    test = result.test
    if not can_score(champion, test.features):
        return None
    theirs = champion.predict(history, test.features)["p_late"].to_numpy()
    ours = result.model.predict(history, test.features)["p_late"].to_numpy()
    rounds = bootstrap(
        test.late, {"model": ours, "champion": theirs}, promise_days(test.promise_s), threshold
    )
    metrics = scorer_metrics(test.late, theirs, threshold)
    mine = scorer_metrics(test.late, ours, threshold)
    return {
        "metrics": metrics,
        "comparison": {
            f"{m}_vs_champion": [
                float(mine[m] - metrics[m]),
                *interval(rounds[f"model_{m}"] - rounds[f"champion_{m}"]),
            ]
            for m in ("auc", "ap")
        },
    }


def can_score(model: DelayModel, features: pd.DataFrame) -> bool:
    """Whether `model` (perhaps trained by an earlier version) can score rows shaped like `features`."""
    if not isinstance(getattr(model, "text", None), TextSignals) or model.classifier is None:
        return False
    return set(model.feature_columns) <= {*features.columns, *TEXT_FEATURES}
