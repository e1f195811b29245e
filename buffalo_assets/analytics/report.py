"""A static HTML page people look at: how deliveries went, and what is at risk now.

Four plots (matplotlib, Agg backend, nothing shown on screen): door-to-door distribution,
late share by week, customs dwell by week, and the risk of what is in flight. The page is
self-contained (plots embedded as base64 PNG), so it can be stored, mailed or served as is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from buffalo_assets.lazy import np, pd


FIGURES: tuple[str, ...] = ("door_to_door", "late_share_by_week", "customs_dwell_by_week", "in_flight_risk")
TITLES = {
    "door_to_door": "Door-to-door days of delivered orders",
    "late_share_by_week": "Share of deliveries after the promise, by week",
    "customs_dwell_by_week": "Hours in customs, by week the parcel left customs",
    "in_flight_risk": "Orders in flight by chance of arriving late",
}


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


def render_report(
    status_now: pd.DataFrame,
    kpis: pd.DataFrame,
    risk: pd.DataFrame,
    evaluation: dict[str, Any] | None = None,
    generated_at: datetime | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The HTML page and its plots as PNG bytes by name (`FIGURES`).

    `status_now`, `kpis` and `risk` are the `order_status_now`, `delivery_kpis` and
    `score_in_flight` outputs; `evaluation` (model vs baseline metrics) adds a table.
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
        axes.set_xlabel("week of delivery")

    def customs(axes: Any) -> None:
        dwell = weekly["median_hours_customs"]
        if dwell.notna().sum() == 0:
            return _no_data(axes)
        axes.plot(weeks, dwell, marker="o", color="#9b59b6")
        axes.set_ylabel("median hours in customs")
        axes.set_xlabel("week")

    def in_flight(axes: Any) -> None:
        if risk.empty:
            return _no_data(axes)
        p = risk["p_late"].to_numpy(dtype="float64")
        at_risk = risk["at_risk"].to_numpy(dtype=bool)
        bins = np.linspace(0, 1, 21)
        axes.hist([p[~at_risk], p[at_risk]], bins=bins, stacked=True, color=["#7f7f7f", "#c0504d"])
        axes.legend(["not at risk", f"at risk ({int(at_risk.sum())})"])
        axes.set_xlabel("p_late")
        axes.set_ylabel("orders in flight")

    drawers = {
        "door_to_door": door_to_door,
        "late_share_by_week": late_share,
        "customs_dwell_by_week": customs,
        "in_flight_risk": in_flight,
    }
    figures = {name: _png(drawers[name]) for name in FIGURES}
    when = (generated_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    late = status_now["is_late"].dropna()
    summary = [
        ("orders", f"{len(status_now):,}"),
        ("delivered", f"{len(delivered):,}"),
        ("late share of delivered", f"{delivered['is_late'].fillna(False).astype(bool).mean():.1%}")
        if len(delivered)
        else ("late share of delivered", "-"),
        ("late now (incl. overdue)", f"{int(late.astype(bool).sum()):,}"),
        ("in flight", f"{len(risk):,}"),
        ("at risk", f"{int(risk['at_risk'].sum()) if len(risk) else 0:,}"),
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Buffalo deliveries</title>",
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>Buffalo deliveries</h1><p>Generated {html.escape(when)}.</p>",
        "<table>"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in summary),
        "</table>",
    ]
    if evaluation and "model" in evaluation and "baseline" in evaluation:
        header = "<tr><th></th><th>AUC</th><th>precision</th><th>recall</th><th>F1</th><th>MAE days</th></tr>"
        rows = "".join(
            f"<tr><td>{who}</td>"
            + "".join(
                f"<td>{evaluation[who].get(k, float('nan')):.3f}</td>"
                for k in ("auc", "precision", "recall", "f1", "mae_days")
            )
            + "</tr>"
            for who in ("model", "baseline")
        )
        parts.append(f"<h2>Delay model on the latest orders (time split)</h2><table>{header}{rows}</table>")
    for name in FIGURES:
        data = base64.b64encode(figures[name]).decode("ascii")
        parts.append(
            f"<h2 id='{name}'>{html.escape(TITLES[name])}</h2>"
            f"<img alt='{html.escape(TITLES[name])}' data-figure='{name}' src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts), figures
