"""Why the model calls a parcel at risk, in words an operations person reads.

The reasons come from the model itself, not from rules: for each group of related features
(the stage and time in it, the time left to the promise, the newest tracking text, how long
each stage is taking lately, ...) the model scores the order again with that group set to
its typical training value (`FeatureProfile.typical`), and the drop in its log-odds is the
group's contribution. The groups that raised the risk the most (at least `MIN_LOGIT`) become
the order's reasons, worded from the order's own values, most important first.

This is occlusion, a local attribution: it says what moved this model's answer for this
order, not what caused the delay. The words compare with what is typical in the model's
training ("customs taking 2.3x its usual time lately").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from buffalo_assets.analytics.features import DWELL_STAGE_FEATURES, PROVINCES
from buffalo_assets.analytics.stages import JOURNEY_STAGES, STAGES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from buffalo_assets.analytics.drift import FeatureProfile
else:
    from buffalo_assets.lazy import np, pd

TOP = 3
MIN_LOGIT = 0.1  # a group that moved the log-odds by less than this is no reason
SEPARATOR = "; "
_STAGE_WORDS = {
    "processing": "at the warehouse in China",
    "dispatched": "dispatched",
    "in_transit": "in transit",
    "arrived_hub": "at the Johannesburg hub",
    "customs": "in customs",
    "out_for_delivery": "out for delivery",
    "local_transit": "with the local courier",
}


def _stage(code: float) -> str:
    name = STAGES[int(code)] if np.isfinite(code) and 0 <= int(code) < len(STAGES) else "unknown"
    return _STAGE_WORDS.get(name, name.replace("_", " "))


def _days(hours: float) -> str:
    days = hours / 24
    if days >= 1.5:
        return f"{days:.0f} days"
    return f"{hours:.0f} hours" if hours >= 1.5 else "less than 2 hours"


def _usual(value: float, typical: float) -> str:
    if not (np.isfinite(value) and np.isfinite(typical)) or typical <= 0:
        return ""
    ratio = value / typical
    return f" ({ratio:.1f}x the usual)" if ratio >= 1.15 else ""


# Each group: the features it sets to their typical value, and how to word it for one row
# (the row's values and the typical ones). Features a model dropped are simply absent.
Row = Mapping[str, Any]
Words = Callable[[Row, dict[str, float], str], str]


def _words_stage(row: Row, typical: dict[str, float], text: str) -> str:
    return f"{_stage(row['stage_code'])} for {_days(row['hours_in_stage'])}"


def _words_promise(row: Row, typical: dict[str, float], text: str) -> str:
    left = row["hours_to_promise"]
    return "past the promised date" if left < 0 else f"{_days(left)} left to the promised date"


def _words_age(row: Row, typical: dict[str, float], text: str) -> str:
    return f"ordered {_days(row['age_hours'])} ago"


def _words_quiet(row: Row, typical: dict[str, float], text: str) -> str:
    since = row["hours_since_event"]
    return "no tracking event yet" if not np.isfinite(since) else f"no tracking news for {_days(since)}"


def _words_mass(row: Row, typical: dict[str, float], text: str) -> str:
    weight, volumetric = row.get("weight_kg", np.nan), row.get("volumetric_weight_kg", np.nan)
    if np.isfinite(volumetric) and (not np.isfinite(weight) or volumetric > weight * 1.2):
        return f"bulky ({volumetric:.0f} kg volumetric)"
    return f"weighs {weight:.0f} kg" if np.isfinite(weight) else "not weighed yet"


def _words_value(row: Row, typical: dict[str, float], text: str) -> str:
    value = row["declared_value_zar"]
    return f"declared at R{value:,.0f}" if np.isfinite(value) else "no declared value"


def _words_text(row: Row, typical: dict[str, float], text: str) -> str:
    return f'latest tracking news: "{text}"' if text else "no tracking news yet"


def _words_recent_late(row: Row, typical: dict[str, float], text: str) -> str:
    share = row.get("late_share_7d", np.nan)
    if np.isfinite(share):
        return f"{share:.0%} of the parcels delivered in the last 7 days were late"
    return "many recent parcels late"


def _words_province(row: Row, typical: dict[str, float], text: str) -> str:
    code = row.get("province_code", np.nan)
    name = PROVINCES[int(code)] if np.isfinite(code) and 0 <= int(code) < len(PROVINCES) else "its province"
    share = row.get("province_late_share_14d", np.nan)
    tail = f" ({share:.0%} in 14 days)" if np.isfinite(share) else ""
    return f"deliveries to {name} often late lately{tail}"


def _words_own_dwell(row: Row, typical: dict[str, float], text: str) -> str:
    stage = _stage(row["stage_code"])
    return f"parcels {stage} taking {_days(row['stage_dwell_7d'])} lately" + _usual(
        row["stage_dwell_7d"], typical.get("stage_dwell_7d", np.nan)
    )


def _dwell_words(stage: str) -> Words:
    column = f"dwell_7d_{stage}"
    where = _STAGE_WORDS.get(stage, stage.replace("_", " "))

    def words(row: Row, typical: dict[str, float], text: str) -> str:
        return f"parcels {where} taking {_days(row[column])} lately" + _usual(
            row[column], typical.get(column, np.nan)
        )

    return words


GROUPS: dict[str, tuple[tuple[str, ...], Words]] = {
    "stage": (("stage_code", "hours_in_stage", "visits_so_far"), _words_stage),
    "promise": (("hours_to_promise",), _words_promise),
    "age": (("age_hours", "created_weekday"), _words_age),
    "quiet": (("hours_since_event", "events_so_far"), _words_quiet),
    "mass": (("weight_kg", "volumetric_weight_kg"), _words_mass),
    "value": (("declared_value_zar",), _words_value),
    "text": (("last_text", "prev_text", "text_risk_last", "text_risk_max"), _words_text),
    "recent_late": (("late_share_7d", "lateness_7d"), _words_recent_late),
    "province": (("province_code", "province_late_share_14d"), _words_province),
    "own_dwell": (("stage_dwell_3d", "stage_dwell_7d", "stage_dwell_ratio"), _words_own_dwell),
    **{
        f"dwell_{stage}": ((name,), _dwell_words(stage))
        for stage, name in zip(JOURNEY_STAGES, DWELL_STAGE_FEATURES, strict=True)
    },
}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def contributions(
    predict_raw: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    columns: tuple[str, ...],
    typical: dict[str, float],
) -> dict[str, np.ndarray]:
    """Per group: how much the log-odds fall when its features take their typical values."""
    base = _logit(predict_raw(x))
    out: dict[str, np.ndarray] = {}
    for group, (features, _) in GROUPS.items():
        index = [columns.index(f) for f in features if f in columns and np.isfinite(typical.get(f, np.nan))]
        if not index or not len(x):
            continue
        changed = x.copy()
        for j in index:
            changed[:, j] = typical[columns[j]]
        out[group] = base - _logit(predict_raw(changed))
    return out


def top_reasons(
    contribution: dict[str, np.ndarray],
    frame: pd.DataFrame,
    texts: list[str],
    typical: dict[str, float],
    *,
    top: int = TOP,
) -> list[str | None]:
    """Per row of `frame`: its reasons, most important first, joined by '; ' (None: none)."""
    if not contribution or not len(frame):
        return [None] * len(frame)
    groups = list(contribution)
    matrix = np.column_stack([contribution[g] for g in groups])
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :top]
    out: list[str | None] = []
    for i, row in enumerate(cast(list[Row], frame.to_dict("records"))):
        text = texts[i]
        words = [GROUPS[groups[j]][1](row, typical, text) for j in order[i] if matrix[i, j] >= MIN_LOGIT]
        out.append(SEPARATOR.join(words) if words else None)
    return out


def explain(
    model: Any, history: Any, features: pd.DataFrame, latest_texts: Mapping[str, str] | None = None
) -> list[str | None]:
    """Reasons for each row of `features` (in-flight features) from `model`'s own attributions.

    `latest_texts` (order id -> its newest tracking text, as Buffalo wrote it) words the text
    reason; without it the text's template (numbers as #) is quoted.
    """
    profile: FeatureProfile | None = getattr(model, "profile", None)
    if profile is None or not len(features):
        return [None] * len(features)
    frame = model.text.transform(history, features)
    columns = tuple(model.feature_columns)
    x = frame[list(columns)].to_numpy(dtype="float64")

    def predict_raw(matrix: np.ndarray) -> np.ndarray:
        return model.classifier.predict_proba(matrix)[:, 1]

    contribution = contributions(predict_raw, x, columns, profile.typical)
    ids = frame["last_text_id"].to_numpy(dtype="int64")
    orders = frame["order_id"].astype(str).to_numpy()
    known = latest_texts or {}
    texts = [
        known.get(order) or (str(history.texts[i]) if i >= 0 else "")
        for order, i in zip(orders, ids, strict=True)
    ]
    return top_reasons(contribution, frame, texts, profile.typical)


def latest_texts(events: pd.DataFrame, orders: pd.Series, as_of: Any) -> dict[str, str]:
    """Each order's newest tracking text at or before `as_of`, as written."""
    if not len(events) or not len(orders):
        return {}
    wanted = events[events["order_id"].astype(str).isin(set(orders.astype(str)))]
    at = pd.to_datetime(wanted["event_at"], utc=True)
    wanted = wanted[at.notna() & (at <= pd.Timestamp(as_of))].assign(_at=at)
    newest = wanted.sort_values("_at", kind="stable").drop_duplicates("order_id", keep="last")
    return dict(
        zip(newest["order_id"].astype(str), newest["description"].fillna("").astype(str), strict=True)
    )
