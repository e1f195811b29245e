"""What an account's own tracking texts say about lateness, learned per model from its training orders.

No wording is written here: a template (`event_stages.template_of`) means whatever the
training orders that showed it say it means. `TextSignals.transform` adds the model's text
features (`features.TEXT_FEATURES`) to snapshot rows that carry the newest and previous
event's template ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from buffalo_assets.analytics._time import epoch_seconds
from buffalo_assets.analytics.features import History, last_at_or_before

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

TEXT_CODES = 250  # categories for the newest/previous text; rarer templates share one
TEXT_PRIOR_ORDERS = 20.0  # orders' worth of the overall late share a template's own is shrunk towards
TEXT_FOLDS = 5


@dataclass
class TextSignals:
    """What the account's own tracking texts say about lateness, learned from training orders.

    `code` numbers the commonest templates (for the categorical `last_text` / `prev_text`);
    `risk` is each template's late share among the training orders that showed it, shrunk
    towards the overall share and taken relative to it (`text_risk_last`: of the newest
    event's template; `text_risk_max`: the highest among the templates seen so far). On the
    training rows themselves the risk of a template comes from the other folds of orders, so
    an order's own outcome never feeds its own feature. Only events up to `until_s` (the end
    of the training window) are read, so nothing the validation or test weeks said reaches
    the model through its text signals.
    """

    code: dict[str, int] = field(default_factory=dict)
    risk: dict[str, float] = field(default_factory=dict)
    _oof: tuple[np.ndarray, np.ndarray] | None = None  # (fold per order position, risk per fold x text)

    @classmethod
    def fit(
        cls, history: History, train_orders: np.ndarray, late: np.ndarray, until_s: float, seed: int = 0
    ) -> TextSignals:
        """Learn from the training orders (positions in `history`), their outcomes, and the
        events up to `until_s`."""
        h = history
        orders = np.asarray(train_orders, dtype="int64")
        if len(orders) and (orders.min() < 0 or orders.max() >= h.size):
            raise ValueError("training orders must be positions of orders in the history")
        seen_then = (h.event_text >= 0) & (h.event_at <= until_s)
        frequency = np.bincount(h.event_text[seen_then], minlength=len(h.texts))
        ranked = np.argsort(-frequency, kind="stable")[: min(TEXT_CODES, int((frequency > 0).sum()))]
        code = {str(h.texts[t]): k for k, t in enumerate(ranked)}
        outcome = np.zeros(h.size, dtype="float64")
        outcome[orders] = np.asarray(late, dtype="float64")
        training = np.zeros(h.size, dtype=bool)
        training[orders] = True
        fold = np.random.default_rng(seed).integers(0, TEXT_FOLDS, h.size)
        # Each (order, template) once: did the order show the template at all.
        shown = pd.DataFrame({"order": h.event_order, "text": h.event_text})[seen_then]
        shown = shown[training[shown["order"].to_numpy()]].drop_duplicates()
        order, text = shown["order"].to_numpy(), shown["text"].to_numpy()
        size = len(h.texts)
        seen = np.zeros((TEXT_FOLDS, size))
        lates = np.zeros((TEXT_FOLDS, size))
        np.add.at(seen, (fold[order], text), 1.0)
        np.add.at(lates, (fold[order], text), outcome[order])
        prior = float(outcome[training].mean()) if training.any() else 0.0

        def shrunk(n: np.ndarray, k: np.ndarray) -> np.ndarray:
            return (k + TEXT_PRIOR_ORDERS * prior) / (n + TEXT_PRIOR_ORDERS) - prior

        full = shrunk(seen.sum(axis=0), lates.sum(axis=0))
        others = shrunk(seen.sum(axis=0) - seen, lates.sum(axis=0) - lates)
        risk = {str(h.texts[t]): float(full[t]) for t in np.flatnonzero(seen.sum(axis=0) > 0)}
        return cls(code=code, risk=risk, _oof=(fold, others))

    def transform(
        self, history: History, features: pd.DataFrame, *, out_of_fold: bool = False
    ) -> pd.DataFrame:
        """`features` with `TEXT_FEATURES` added from its `last_text_id` / `prev_text_id`."""
        h = history
        texts = pd.Series(h.texts, dtype="object")
        code = texts.map(self.code).fillna(TEXT_CODES).to_numpy(dtype="float64")
        risk = texts.map(self.risk).fillna(0.0).to_numpy(dtype="float64")
        last = features["last_text_id"].to_numpy(dtype="int64")
        prev = features["prev_text_id"].to_numpy(dtype="int64")
        out = features.copy()
        out["last_text"] = np.where(last >= 0, code[np.clip(last, 0, None)], np.nan) if len(code) else np.nan
        out["prev_text"] = np.where(prev >= 0, code[np.clip(prev, 0, None)], np.nan) if len(code) else np.nan
        position = pd.Index(h.order_ids).get_indexer(features["order_id"].astype(str))
        if out_of_fold and self._oof is not None:
            fold, per_fold = self._oof
            event_risk = per_fold[fold[h.event_order], np.clip(h.event_text, 0, None)]
        else:
            event_risk = risk[np.clip(h.event_text, 0, None)] if len(risk) else np.zeros(len(h.event_text))
        event_risk = np.where(h.event_text >= 0, event_risk, -np.inf)
        running = (
            pd.Series(event_risk).groupby(h.event_order).cummax().to_numpy()
            if len(event_risk)
            else event_risk
        )
        # The row's newest event: the last event of its order at or before its moment.
        index = last_at_or_before(
            h.event_order, h.event_at, np.clip(position, 0, None), epoch_seconds(features["at"])
        )
        safe = np.clip(index, 0, None)
        has = (index >= 0) & (position >= 0)
        out["text_risk_max"] = np.where(has, running[safe] if len(running) else np.nan, np.nan)
        out.loc[~np.isfinite(out["text_risk_max"].to_numpy(dtype="float64")), "text_risk_max"] = np.nan
        out["text_risk_last"] = np.where(has, event_risk[safe] if len(event_risk) else np.nan, np.nan)
        out.loc[~np.isfinite(out["text_risk_last"].to_numpy(dtype="float64")), "text_risk_last"] = np.nan
        return out

    def without_folds(self) -> TextSignals:
        """The same signals without the training folds (what is stored and scores)."""
        return TextSignals(code=self.code, risk=self.risk)
