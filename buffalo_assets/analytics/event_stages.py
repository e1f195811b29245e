"""Which journey stage a tracking text means, learned from the account's own data.

Buffalo publishes no list of its event texts, and an account may word them otherwise or
write them in Chinese; the English keyword rules of `orders/vocabulary.py` then leave
events `unknown`. But every order comes with a `statusname` the API words consistently, and
an order's newest event is, most of the time, the one its status describes. So:

1. Each text is reduced to a template: Unicode-normalized, case-folded, every run of digits
   one `#` (flight numbers, amounts, tracking numbers and batch codes vary; their
   wording does not).
2. For every order, its newest event's template is paired with the stage of its status.
   A template seen in at least `MIN_PAIRS` pairs whose commonest stage has at least
   `MIN_SHARE` of them takes that stage (source `status`).
3. Otherwise the keyword rules decide (source `keywords`), where they recognize the text.
4. A template left over (one that was never an order's newest event when the orders were
   read: short-lived steps) is placed by its neighbours (source `neighbours`): where the
   events before and after it mostly share a stage, it takes that stage.
5. Else it takes the stage of the texts it resembles most by character n-grams, if the
   resemblance is clear (source `similar`); else the stage of the event before it, which
   claims no new stage without evidence (source `neighbours`); else it stays `unknown`.

One reading of the orders sees few orders in a short step, so a few short-lived texts may
fall to step 5 and take the stage before them (the step's time then counts to that stage).

The analytics (stage durations, KPIs by stage, the delay model's features) read events
through `relabel`, so an account whose texts the keywords do not know still has stages.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buffalo_assets.analytics.stages import STAGES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd

MIN_PAIRS = 5
MIN_SHARE = 0.8
MIN_SIMILAR_PROBABILITY = 0.6
SOURCES = ("status", "keywords", "neighbours", "similar", "unknown")
TEMPLATE_COLUMNS: tuple[str, ...] = ("template", "stage", "source", "pairs", "share", "events", "example")


def template_of(text: str | None) -> str | None:
    """A text's wording without its numbers: 'Departed on flight CZ123' -> 'departed on flight cz#'."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    normal = unicodedata.normalize("NFKC", str(text)).casefold()
    out: list[str] = []
    for char in normal:
        if char.isdigit():
            if not out or out[-1] != "#":
                out.append("#")
        elif char.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(char)
    return "".join(out).strip() or None


@dataclass(frozen=True)
class EventStages:
    """A stage per template, how it was decided, and how often it occurs."""

    templates: pd.DataFrame  # TEMPLATE_COLUMNS, one row per template

    def stage_of(self) -> dict[str, str]:
        return dict(zip(self.templates["template"], self.templates["stage"], strict=True))

    def summary(self) -> dict[str, int]:
        """Events per source of their stage (status, keywords, similar, unknown)."""
        counts = self.templates.groupby("source")["events"].sum()
        return {source: int(counts.get(source, 0)) for source in SOURCES}


def _templates(descriptions: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Template per row (object array, missing for no text) and the template of each distinct text."""
    codes, uniques = pd.factorize(descriptions, use_na_sentinel=True)
    unique_templates = [template_of(text) for text in uniques]
    per_row = pd.Series(codes).map(dict(enumerate(unique_templates))).to_numpy(dtype=object)
    return per_row, pd.Series(unique_templates, index=uniques, dtype="object")


def learn_event_stages(clean_orders: pd.DataFrame, events: pd.DataFrame) -> EventStages:
    """Learn a stage for every event template from `core.clean_orders` (order_id, stage) and
    `core.order_events` (order_id, event_at, stage as the keyword rules read it, description)."""
    per_row, _ = _templates(events["description"]) if len(events) else (np.empty(0, object), None)
    frame = pd.DataFrame(
        {
            "order_id": events["order_id"].astype(str).to_numpy() if len(events) else [],
            "at": pd.to_datetime(events["event_at"], utc=True).to_numpy() if len(events) else [],
            "template": per_row,
            "keyword_stage": events["stage"].to_numpy() if len(events) else [],
            "description": events["description"].to_numpy() if len(events) else [],
        }
    )
    frame = frame[frame["template"].notna()]
    if frame.empty:
        return EventStages(pd.DataFrame(columns=list(TEMPLATE_COLUMNS)))
    per_template = frame.groupby("template", sort=True).agg(
        events=("order_id", "size"),
        keyword_stage=("keyword_stage", lambda s: s.mode().iat[0]),
        example=("description", "first"),
    )
    # The newest event of each order, paired with the stage its status says it is in.
    timed = frame[frame["at"].notna()]
    newest = timed.sort_values(["order_id", "at"], kind="stable").groupby("order_id").tail(1)
    status = clean_orders.assign(order_id=clean_orders["order_id"].astype(str)).set_index("order_id")["stage"]
    pairs = pd.DataFrame(
        {"template": newest["template"].to_numpy(), "stage": status.reindex(newest["order_id"]).to_numpy()}
    )
    pairs = pairs[pairs["stage"].isin(STAGES) & (pairs["stage"] != "unknown")]
    counts = pairs.groupby(["template", "stage"]).size().unstack(fill_value=0)
    total = counts.sum(axis=1)
    top_stage = counts.idxmax(axis=1) if len(counts) else pd.Series(dtype="object")
    top_share = counts.max(axis=1) / total if len(counts) else pd.Series(dtype="float64")

    table = per_template.assign(
        pairs=total.reindex(per_template.index).fillna(0).astype("int64"),
        share=top_share.reindex(per_template.index),
    )
    learned = (table["pairs"] >= MIN_PAIRS) & (table["share"] >= MIN_SHARE)
    keyword = ~learned & (table["keyword_stage"] != "unknown")
    table["stage"] = np.where(
        learned,
        top_stage.reindex(table.index).to_numpy(),
        np.where(keyword, table["keyword_stage"], "unknown"),
    )
    table["source"] = np.where(learned, "status", np.where(keyword, "keywords", "unknown"))
    if (table["source"] == "unknown").any():
        _place_leftovers(table, frame)
    table = table.reset_index()
    return EventStages(table[list(TEMPLATE_COLUMNS)])


def _place_leftovers(table: pd.DataFrame, frame: pd.DataFrame) -> None:
    """Steps 4 and 5 for the templates still `unknown` in `table` (changed in place)."""
    decided = table["stage"].where(table["source"] != "unknown")
    timeline = frame[frame["at"].notna()].sort_values(["order_id", "at"], kind="stable")
    stage = timeline["template"].map(decided)
    by_order = stage.groupby(timeline["order_id"].to_numpy())
    before, after = by_order.shift(1), by_order.shift(-1)
    before = before.groupby(timeline["order_id"].to_numpy()).ffill()
    after = after.groupby(timeline["order_id"].to_numpy()).bfill()
    leftover = timeline["template"].isin(table.index[table["source"] == "unknown"])
    context = pd.DataFrame({"template": timeline["template"], "before": before, "after": after})[
        leftover.to_numpy()
    ]
    between = context[context["before"].notna() & (context["before"] == context["after"])]
    sandwiched = between.groupby("template")["before"].agg(_commonest)
    seen = context.groupby("template").size()
    agreeing = between.groupby("template").size().reindex(sandwiched.index)
    sure = sandwiched[agreeing >= MIN_SHARE * seen.reindex(sandwiched.index)]
    table.loc[sure.index, "stage"] = sure.to_numpy()
    table.loc[sure.index, "source"] = "neighbours"

    rest = table.index[table["source"] == "unknown"]
    if not len(rest):
        return
    known = table.index[table["source"] != "unknown"]
    similar, clear = _similar(known, table.loc[known, "stage"], rest)
    table.loc[rest[clear], "stage"] = similar[clear]
    table.loc[rest[clear], "source"] = "similar"
    rest = rest[~clear]
    previous = context[context["template"].isin(rest) & context["before"].notna()]
    commonest = previous.groupby("template")["before"].agg(_commonest)
    table.loc[commonest.index, "stage"] = commonest.to_numpy()
    table.loc[commonest.index, "source"] = "neighbours"


def _commonest(values: pd.Series) -> str:
    return str(values.mode().iat[0])


def _similar(known: pd.Index, stages: pd.Series, unknown: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Stage of each unknown template by its character n-grams, and whether the answer is clear."""
    labels = stages.to_numpy()
    if len(known) < 2 or len(set(labels)) < 2:
        return np.full(len(unknown), "unknown", dtype=object), np.zeros(len(unknown), dtype=bool)
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
    known_x = vectorizer.fit_transform(list(known))
    classifier = LogisticRegression(max_iter=1000, C=10.0).fit(known_x, labels)
    probabilities = classifier.predict_proba(vectorizer.transform(list(unknown)))
    best = probabilities.argmax(axis=1)
    return classifier.classes_[best], probabilities.max(axis=1) >= MIN_SIMILAR_PROBABILITY


def relabel(events: pd.DataFrame, learned: EventStages) -> pd.DataFrame:
    """`events` with `stage` as learned for its text's template (unchanged where no text)."""
    if events.empty or learned.templates.empty:
        return events
    per_row, _ = _templates(events["description"])
    stage = pd.Series(per_row, dtype="object").map(learned.stage_of()).to_numpy()
    keep = pd.isna(stage)
    return events.assign(stage=np.where(keep, events["stage"].to_numpy(), stage))
