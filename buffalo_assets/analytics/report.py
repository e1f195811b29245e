"""A static HTML page people look at: how deliveries went, and what is at risk now.

Five plots (matplotlib, Agg backend, nothing shown on screen): door-to-door distribution,
late share by week, customs dwell by week, the risk of what is in flight, and the realized
accuracy of the predictions and alerts by week (how the orders called at risk ended). The page is
self-contained (plots embedded as base64 PNG), so it can be stored, mailed or served as is.
Its markup is the Jinja2 template `templates/report.html.j2` (every value escaped); this
module works out what goes in it.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd


FIGURES: tuple[str, ...] = (
    "door_to_door",
    "late_share_by_week",
    "customs_dwell_by_week",
    "in_flight_risk",
    "realized_accuracy",
)
TITLES = {
    "door_to_door": "Door-to-door days of delivered orders",
    "late_share_by_week": "Share of deliveries after the promise, by week",
    "customs_dwell_by_week": "Hours in customs, by week the parcel left customs",
    "in_flight_risk": "Orders in flight by chance of arriving late",
    "realized_accuracy": "Realized accuracy of the at-risk calls, by week they were made",
}


@dataclass(frozen=True)
class ModelStanding:
    """What the report says about the delay model: the champion's evaluation, the newest verdict."""

    champion: str | None = None
    evaluation: Mapping[str, Any] | None = None  # the champion's, from its training
    newest: str | None = None
    newest_status: str | None = None
    newest_note: str | None = None


def _number(value: Any, style: str = ".3f") -> str:
    """A figure as text; a missing one (None, NaN) as a dash, never an error."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return format(number, style) if math.isfinite(number) else "-"


def _png(draw: Callable[[Any], None]) -> bytes:
    from matplotlib.figure import Figure  # Figure without pyplot: no global state, no display

    figure = Figure(figsize=(7.5, 3.6), dpi=100, layout="constrained")
    axes = figure.subplots()
    draw(axes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _no_data(axes: Any) -> None:
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def _weekly_axis(axes: Any) -> None:
    """Week dates that never print over each other: a few ticks, each said once, briefly."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def render_report(
    status_now: pd.DataFrame,
    kpis: pd.DataFrame,
    risk: pd.DataFrame,
    standing: ModelStanding | None = None,
    generated_at: datetime | None = None,
    performance: pd.DataFrame | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The HTML page and its plots as PNG bytes by name (`FIGURES`).

    `status_now`, `kpis` and `risk` are the `order_status_now`, `delivery_kpis` and
    `order_delay_risk` outputs; `standing` (the gate's verdict and the champion's test
    figures) adds the model's section; `performance` (`delay_model_performance`) the realized
    accuracy by week. Any figure may be missing: it shows as a dash.
    """
    delivered = status_now[status_now["delivered_at"].notna()]
    door = (
        pd.to_datetime(delivered["delivered_at"], utc=True)
        - pd.to_datetime(delivered["created_at"], utc=True)
    ).dt.total_seconds().to_numpy() / 86_400
    weekly = kpis[kpis["grain"] == "week"].sort_values("period_start")
    weeks = pd.to_datetime(weekly["period_start"])

    def door_to_door(axes: Any) -> None:
        if not len(door):
            return _no_data(axes)
        axes.hist(door, bins=40, color="#3b6ea5")
        for q, style in ((0.5, "-"), (0.9, "--")):
            value = float(np.quantile(door, q))
            axes.axvline(value, color="black", linestyle=style, label=f"p{int(q * 100)} {value:.1f} days")
        axes.set_xlabel("days from order to delivery")
        axes.set_ylabel("orders")
        axes.legend()

    def late_share(axes: Any) -> None:
        share = 1 - weekly["on_time_share"]
        if share.notna().sum() == 0:
            return _no_data(axes)
        axes.bar(weeks, share, width=5, color="#c0504d")
        axes.set_ylabel("late share")
        axes.set_ylim(0, 1)
        axes.set_xlabel("week of delivery (Monday)")
        _weekly_axis(axes)

    def customs(axes: Any) -> None:
        dwell = weekly["median_hours_customs"]
        if dwell.notna().sum() == 0:
            return _no_data(axes)
        axes.plot(weeks, dwell, marker="o", color="#9b59b6")
        axes.set_ylabel("median hours in customs")
        axes.set_xlabel("week (Monday)")
        _weekly_axis(axes)

    def in_flight(axes: Any) -> None:
        scored = risk[risk["p_late"].notna()]
        if scored.empty:
            return _no_data(axes)
        p = scored["p_late"].to_numpy(dtype="float64")
        at_risk = scored["at_risk"].fillna(False).to_numpy(dtype=bool)
        bins = np.linspace(0, 1, 21)
        axes.hist([p[~at_risk], p[at_risk]], bins=bins, stacked=True, color=["#7f7f7f", "#c0504d"])
        axes.legend(["not at risk", f"at risk ({int(at_risk.sum())})"])
        axes.set_xlabel("p_late")
        axes.set_ylabel("orders in flight")

    def realized(axes: Any) -> None:
        weekly_calls = _realized_by_week(performance)
        if weekly_calls.empty:
            return _no_data(axes)
        when = pd.to_datetime(weekly_calls.index)
        lines = [
            (column, label, color)
            for column, label, color in (
                ("model_precision", "precision of the predictions", "#3b6ea5"),
                ("model_recall", "recall of the predictions", "#7f7f7f"),
                ("alerts_precision", "precision of the alerts sent", "#c0504d"),
                ("model_brier", "Brier score (lower is better)", "#9b59b6"),
            )
            if column in weekly_calls and weekly_calls[column].notna().any()
        ]
        if not lines:  # predictions made, none of their orders ended yet
            return _no_data(axes)
        for column, label, color in lines:
            axes.plot(when, weekly_calls[column], marker="o", label=label, color=color)
        axes.set_ylim(0, 1)
        axes.set_xlabel("week the predictions were made (Monday); orders still on their way are not judged")
        axes.legend(fontsize="small")
        _weekly_axis(axes)

    drawers = {
        "realized_accuracy": realized,
        "door_to_door": door_to_door,
        "late_share_by_week": late_share,
        "customs_dwell_by_week": customs,
        "in_flight_risk": in_flight,
    }
    figures = {name: _png(drawers[name]) for name in FIGURES}
    late = status_now["is_late"].dropna()
    summary = [
        ("orders", f"{len(status_now):,}"),
        ("delivered", f"{len(delivered):,}"),
        ("late share of delivered", f"{delivered['is_late'].fillna(False).astype(bool).mean():.1%}")
        if len(delivered)
        else ("late share of delivered", "-"),
        ("late now (incl. overdue)", f"{int(late.astype(bool).sum()):,}"),
        ("in flight", f"{len(risk):,}"),
        ("scored by the model", f"{int(risk['p_late'].notna().sum()) if len(risk) else 0:,}"),
        ("at risk", f"{int(risk['at_risk'].fillna(False).astype(bool).sum()) if len(risk) else 0:,}"),
    ]
    page = _template().render(
        generated=(generated_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary,
        model=_model_context(standing or ModelStanding()),
        figures=[
            {"name": name, "title": TITLES[name], "data": base64.b64encode(figures[name]).decode("ascii")}
            for name in FIGURES
        ],
    )
    return page, figures


def _realized_by_week(performance: pd.DataFrame | None) -> pd.DataFrame:
    """Per week, over every model: precision, recall and Brier of the predictions, precision of the alerts."""
    if performance is None or not len(performance):
        return pd.DataFrame()
    whole = performance[performance["dimension"] == "all"].copy()
    whole["sq_sum"] = whole["brier"] * whole["ended"]
    out = {}
    for source in ("model", "alerts"):
        mine = (
            whole[whole["source"] == source]
            .groupby("week_start")[["true_alarms", "flagged", "late", "sq_sum", "ended"]]
            .sum(min_count=1)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{source}_precision"] = mine["true_alarms"] / mine["flagged"].where(mine["flagged"] > 0)
            if source == "model":
                out["model_recall"] = mine["true_alarms"] / mine["late"].where(mine["late"] > 0)
                out["model_brier"] = mine["sq_sum"] / mine["ended"].where(mine["ended"] > 0)
    return pd.DataFrame(out).sort_index()


def _template() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("buffalo_assets.analytics", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a value the code forgot to give is an error, not a blank
    )
    return environment.get_template("report.html.j2")


def _model_context(standing: ModelStanding) -> dict[str, Any]:
    """What the template says about the delay model: the verdict, the champion's figures."""
    judged = standing.newest_status in ("champion", "retired", "rejected")
    context: dict[str, Any] = {
        "newest": standing.newest,
        "newest_status": standing.newest_status if judged else f"not judged ({standing.newest_status})",
        "newest_note": standing.newest_note or "",
        "champion": standing.champion,
    }
    if standing.champion is None:
        return context
    evaluation = standing.evaluation or {}
    test = evaluation.get("test", {})
    band = evaluation.get("band", {})
    context |= {
        "test_orders": _number(test.get("orders"), ",.0f"),
        "test_days": _number(evaluation.get("test_days"), "g"),
        "promise_days": _number(test.get("promise_days"), ".0f"),
        "moments": _number(test.get("moments"), ",.0f"),
        "horizon_days": _number(evaluation.get("horizon_days"), "g"),
        "late_orders": _number(test.get("late_orders"), ",.0f"),
        "on_time_orders": _number(test.get("on_time_orders"), ",.0f"),
        "threshold": _number(evaluation.get("threshold"), ".2f"),
        "band": {
            "coverage": _number(band.get("coverage"), ".0%"),
            "judged": _number(band.get("judged"), ",.0f"),
            "below": _number(band.get("below"), ".0%"),
            "above": _number(band.get("above"), ".0%"),
        },
        "scorers": [
            {"who": who, "cells": _scorer_cells(evaluation.get(who, {}))} for who in ("model", "baseline")
        ],
        "reliability": _reliability_rows(evaluation.get("reliability", {})),
    }
    return context


def _scorer_cells(figures: Mapping[str, Any]) -> list[str]:
    intervals = figures.get("intervals", {})
    cells = []
    for name in ("auc", "ap", "brier", "precision", "recall", "f1", "mae_days"):
        low, high = (intervals.get(name) or [None, None])[:2]
        band = f" ({_number(low, '.2f')}-{_number(high, '.2f')})" if name in intervals else ""
        cells.append(f"{_number(figures.get(name))}{band}")
    return cells


def _reliability_rows(reliability: Mapping[str, Any]) -> list[dict[str, Any]]:
    by_bin: dict[float, dict[str, Any]] = {}
    for who in ("model", "baseline"):
        for row in reliability.get(who, []):
            by_bin.setdefault(row["low"], {"high": row["high"]})[who] = row
    return [
        {
            "bin": f"{low:.1f}-{entry['high']:.1f}",
            "cells": [
                value
                for who in ("model", "baseline")
                for value in (
                    _number(entry.get(who, {}).get("rows"), ",.0f"),
                    _number(entry.get(who, {}).get("predicted"), ".2f"),
                    _number(entry.get(who, {}).get("observed"), ".2f"),
                )
            ],
        }
        for low, entry in sorted(by_bin.items())
    ]
