"""Delay-model evaluation: model vs naive baseline vs knowable ceiling vs oracle, two worlds.

    python -m bench.delay                      # both worlds (20,000 orders, 180 days) + scale
    python -m bench.delay --skip-scale         # only the two worlds
    python -m bench.delay --worlds dev --skip-scale   # a development world (seed 101)
    python -m bench.delay --scale-only --orders 100000
    python -m bench.delay --report bench/results/report   # world A's HTML report and plots

Each world is built in process from the sandbox's `OrderBook`: the order details the API
would serve at the scoring time, parsed by `buffalo_assets.orders.parse.parse_order` (the
transform's parser) into clean orders and events. The model is trained on what is visible
then, and scored on every order still travelling; the answer comes from the sandbox's
truth (`OrderBook.truth`, i.e. `/_sandbox/truth`): when each order is really delivered.
Figures are for in-flight orders whose promise is at least 3 days after the scoring time,
pooled over four scoring times 42 hours apart (a model trained at each); AUC is computed
on the pooled margins p_late - threshold, so each scorer keeps its own threshold.

The oracle is the same pipeline given, per order, the sandbox's hidden plan: its arrival
week's congestion, whether customs will inspect it and how long its duty will stay
unpaid. It shows how much of the lateness is predictable at all, had one the future.

The knowable ceiling is the same pipeline given only the hidden facts a perfect analyst
could in principle know at each moment (`ceiling_features`): the true congestion of that
moment's own week (generous: early in a week the data barely reveal it), the true
congestion of the order's arrival week once its hub arrival is visible, its true
inspection probability and whether its inspection has shown yet; never a later week's
congestion, a future inspection draw or how long a duty will stay unpaid. It shows whether
the targets are reachable at all by a model that learns from data.

World A (seed 20261130) has the default delay parameters; world B (seed 20261131) heavier
congestion and slower duty payers. Nothing is tuned on either: the model's settings are
its defaults, fixed on the small test worlds (seed 7) and the development worlds
(`--worlds dev,dev2`: seeds 101 and 102, never run by default). Prints a table, writes
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import write_results
from buffalo_assets.analytics._time import epoch_seconds
from buffalo_assets.analytics.features import FEATURE_COLUMNS, build_history, in_flight_features
from buffalo_assets.analytics.model import (
    DelayModel,
    classification_metrics,
    score_in_flight,
    train_delay_model,
)
from buffalo_assets.orders.parse import parse_order
from buffalo_assets.sandbox.orders import DAY, OrderBook

SCORING_TIME = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()
HORIZON_DAYS = 3.0
# Four scoring times 42 hours apart (different weekdays and times of day), each with a
# model trained on what was known then, so no single lucky or unlucky moment decides.
MOMENTS = tuple(SCORING_TIME - k * 42 * 3600 for k in (3, 2, 1, 0))
TARGETS = {"auc": 0.85, "precision": 0.8, "recall": 0.6, "f1_lead": 0.1}
WORLDS: dict[str, dict[str, Any]] = {
    "A": {"seed": 20261130, "congestion_scale": 5.0, "duty_wait_weights": (70, 20, 10)},
    "B": {"seed": 20261131, "congestion_scale": 9.0, "duty_wait_weights": (45, 30, 25)},
}
# Development worlds (never run by default): settings are tried here, never on A or B.
DEV_WORLDS: dict[str, dict[str, Any]] = {
    "dev": {"seed": 101, "congestion_scale": 5.0, "duty_wait_weights": (70, 20, 10)},
    "dev2": {"seed": 102, "congestion_scale": 3.0, "duty_wait_weights": (55, 30, 15)},
}
ORACLE_COLUMNS = ("oracle_congestion", "oracle_inspected", "oracle_duty_wait_days")
CEILING_COLUMNS = (
    "ceiling_week_congestion",
    "ceiling_arrival_congestion",
    "ceiling_inspection_p",
    "ceiling_inspected",
)
SCORERS = ("model", "baseline", "ceiling", "oracle")


def world_frames(book: OrderBook, now: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`core.clean_orders` and `core.order_events` as the transform would build them at `now`."""
    at = datetime.fromtimestamp(now, UTC)
    order_chunks: list[pd.DataFrame] = []
    event_chunks: list[pd.DataFrame] = []
    total = book.visible_count(now)
    for start in range(0, total, 5_000):  # chunks, so a million event dicts never live at once
        orders: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for index in range(start, min(total, start + 5_000)):
            parsed = parse_order(str(book.order_id(index)), book.detail(index, now), "bench", at)
            orders.append(parsed.order)
            events.extend(parsed.events)
        order_chunks.append(pd.DataFrame(orders))
        event_chunks.append(pd.DataFrame(events))
        book._plan.cache_clear()  # the generator's cache is not the pipeline's memory
    return pd.concat(order_chunks, ignore_index=True), pd.concat(event_chunks, ignore_index=True)


def make_book(orders: int, days: float, seed: int, **params: Any) -> OrderBook:
    return OrderBook(seed=seed, count=orders, start=SCORING_TIME, history_days=days, **params)


def oracle_features(book: OrderBook, now: float) -> pd.DataFrame:
    """The hidden plan per order: arrival-week congestion, inspection, days the duty stays unpaid.

    Also the raw facts the knowable ceiling reads as of a moment (`CEILING_INPUTS`): when the
    parcel reaches the hub, its inspection probability and when its inspection shows.
    """
    rows = []
    for index in range(book.visible_count(now)):
        plan = book.plan(index)
        arrival = next((e.at for e in plan.events if e.stage == "arrived_hub"), None)
        inspection = next((e.at for e in plan.events if "inspection" in e.content), None)
        wait = (
            (plan.duty_paid_at - plan.duty_assessed_at) / DAY
            if plan.duty_paid_at is not None and plan.duty_assessed_at is not None
            else 0.0
        )
        declared = sum(line["declaredvalue"] * line["number"] for box in plan.boxes for line in box)
        rows.append(
            {
                "order_id": str(plan.order_id),
                "oracle_congestion": book.congestion(arrival) if arrival is not None else np.nan,
                "oracle_inspected": float(inspection is not None),
                "oracle_duty_wait_days": wait,
                "arrival_s": arrival if arrival is not None else np.nan,
                "inspection_s": inspection if inspection is not None else np.nan,
                # The sandbox's inspection chance: a fact of the parcel, not of its future.
                "inspection_p": 0.05 + 0.2 * (plan.weight > 10) + 0.2 * (declared > 5000),
            }
        )
    book._plan.cache_clear()
    return pd.DataFrame(rows).set_index("order_id")


def week_congestion(book: OrderBook, moments: np.ndarray) -> np.ndarray:
    """The hidden congestion of the SAST ISO week of each moment (NaN for NaN)."""
    moments = np.asarray(moments, dtype="float64")
    out = np.full(len(moments), np.nan)
    known = ~np.isnan(moments)
    # Weeks start on Monday 00:00 SAST = Sunday 22:00 UTC, on the hour: the hour decides the week.
    hours, inverse = np.unique(np.floor(moments[known] / 3600.0), return_inverse=True)
    out[known] = np.array([book.congestion(h * 3600.0) for h in hours])[inverse]
    return out


def ceiling_features(book: OrderBook, hidden: pd.DataFrame) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The hidden facts a perfect analyst could know at each row's moment, and nothing later.

    Per (order, moment t): the true congestion of t's own SAST week (generous: early in a
    week it is barely revealed by the data), the true congestion of the order's arrival week
    only once its hub arrival is visible at t, its true inspection probability, and whether
    its inspection has shown by t. Never a later week's congestion, a future inspection draw
    or how long a duty will stay unpaid (the features already hold what is visible of duty).
    """

    def add(features: pd.DataFrame) -> pd.DataFrame:
        at = epoch_seconds(features["at"])
        joined = hidden.reindex(features["order_id"].astype(str).to_numpy())
        arrival = joined["arrival_s"].to_numpy(dtype="float64")
        inspection = joined["inspection_s"].to_numpy(dtype="float64")
        arrived = arrival <= at  # NaN (never arrives) compares False
        return pd.DataFrame(
            {
                "ceiling_week_congestion": week_congestion(book, at),
                "ceiling_arrival_congestion": week_congestion(book, np.where(arrived, arrival, np.nan)),
                "ceiling_inspection_p": joined["inspection_p"].to_numpy(dtype="float64"),
                "ceiling_inspected": (inspection <= at).astype("float64"),
            },
            index=features.index,
        )

    return add


def outcomes(book: OrderBook, now: float, order_ids: pd.Series, promised: pd.Series) -> pd.DataFrame:
    """Truth for the scored orders: delivered when, late against our promise, or cancelled."""
    rows = []
    for order_id, promise in zip(order_ids, promised, strict=True):
        truth = book.truth(book.index_of(order_id), now)
        actual = truth["actual_delivery_at"]
        delivered = pd.Timestamp(actual) if actual else pd.NaT
        rows.append(
            {
                "order_id": order_id,
                "final_stage": truth["final_stage"],
                "actual_delivery_at": delivered,
                "late": pd.isna(delivered) or delivered > promise,
            }
        )
    return pd.DataFrame(rows)


def evaluate_world(name: str, orders: int, days: float, params: dict[str, Any]) -> dict[str, Any]:
    """Train and score at each of `MOMENTS` scoring times; pool the in-flight orders of all."""
    book = make_book(orders, days, **params)
    started = time.perf_counter()
    clean, events = world_frames(book, SCORING_TIME)
    prepared = time.perf_counter() - started
    hidden = oracle_features(book, SCORING_TIME)
    knowable = ceiling_features(book, hidden)
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in ("late", *SCORERS)}
    errors: dict[str, list[np.ndarray]] = {k: [] for k in SCORERS}
    per_moment = []
    train_seconds = 0.0
    for moment in MOMENTS:
        as_of = datetime.fromtimestamp(moment, UTC)
        # Tables read at the last moment, taken as of an earlier one: events after it are
        # ignored (the leakage test proves features do not see them).
        history = build_history(clean, events, as_of)
        trained = train_delay_model(history)
        train_seconds += trained.seconds
        model = trained.model
        features = in_flight_features(history)
        risk = score_in_flight(model, features, as_of)
        promised = pd.to_datetime(features["promised_delivery_at"], utc=True)
        truth = outcomes(book, moment, features["order_id"], promised)
        keep = (features["hours_to_promise"].to_numpy() >= HORIZON_DAYS * 24) & (
            truth["final_stage"] != "cancelled"
        ).to_numpy()
        late = truth["late"].to_numpy(dtype=bool)[keep]
        actual_days = _days_after(truth["actual_delivery_at"], as_of)[keep]
        expected_days = _days_after(risk["expected_delivery_at"], as_of)[keep]
        base_p, base_days = model.baseline.predict(features)

        oracle_template = DelayModel(feature_columns=(*FEATURE_COLUMNS, *ORACLE_COLUMNS))
        oracle_facts = hidden[list(ORACLE_COLUMNS)]
        oracle = train_delay_model(history, model=oracle_template, extra_features=oracle_facts).model
        oracle_input = features.copy()
        joined = oracle_facts.reindex(features["order_id"].to_numpy())
        for column in ORACLE_COLUMNS:
            oracle_input[column] = joined[column].to_numpy(dtype="float64")
        oracle_pred = oracle.predict(oracle_input)

        ceiling_template = DelayModel(feature_columns=(*FEATURE_COLUMNS, *CEILING_COLUMNS))
        ceiling = train_delay_model(history, model=ceiling_template, extra_features=knowable).model
        ceiling_input = pd.concat([features, knowable(features)], axis=1)
        ceiling_pred = ceiling.predict(ceiling_input)

        # Each scorer is judged at its own threshold: p above it means at risk.
        flags = {
            "model": risk["p_late"].to_numpy()[keep] - model.threshold,
            "baseline": base_p[keep] - model.baseline.threshold,
            "ceiling": ceiling_pred["p_late"].to_numpy()[keep] - ceiling.threshold,
            "oracle": oracle_pred["p_late"].to_numpy()[keep] - oracle.threshold,
        }
        pooled["late"].append(late)
        for who, margin in flags.items():
            pooled[who].append(margin)
        errors["model"].append(np.abs(expected_days - actual_days))
        errors["baseline"].append(np.abs(base_days[keep] - actual_days))
        errors["ceiling"].append(np.abs(ceiling_pred["remaining_days"].to_numpy()[keep] - actual_days))
        errors["oracle"].append(np.abs(oracle_pred["remaining_days"].to_numpy()[keep] - actual_days))
        per_moment.append(
            {
                "scoring_time": as_of.isoformat(),
                "in_flight": int(len(features)),
                "evaluated": int(keep.sum()),
                "late_share": float(late.mean()) if len(late) else float("nan"),
                **{
                    who: {
                        **classification_metrics(late, margin, 0.0),
                        "best_recall_at_precision": best_recall_at_precision(
                            late, margin, TARGETS["precision"]
                        ),
                    }
                    for who, margin in flags.items()
                },
                "model_version": model.version,
                "internal_evaluation": trained.evaluation,
            }
        )
        print(f"  world {name} at {as_of:%a %Y-%m-%d %H:%M}: {int(keep.sum())} evaluated", flush=True)

    late = np.concatenate(pooled["late"])
    rows = [
        {
            "who": who,
            **classification_metrics(late, np.concatenate(pooled[who]), 0.0, np.concatenate(errors[who])),
            # Recall >= 0.6 at precision >= 0.8 with the best threshold in hindsight: is the
            # target reachable by this scorer's ranking at all?
            "best_recall_at_precision": best_recall_at_precision(
                late, np.concatenate(pooled[who]), TARGETS["precision"]
            ),
        }
        for who in SCORERS
    ]
    by = {r["who"]: r for r in rows}
    met = _targets_met(by["model"], by["baseline"])
    return {
        "world": name,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "orders": orders,
        "history_days": days,
        "scoring_times": [datetime.fromtimestamp(m, UTC).isoformat() for m in MOMENTS],
        "evaluated": int(len(late)),
        "evaluated_late_share": float(late.mean()) if len(late) else float("nan"),
        "prepare_seconds": prepared,
        "train_seconds": train_seconds,
        "results": rows,
        "targets_met": met,
        # Whether the knowable ceiling and the oracle themselves reach the targets.
        "ceiling_targets_met": _targets_met(by["ceiling"], by["baseline"]),
        "oracle_targets_met": _targets_met(by["oracle"], by["baseline"]),
        "per_moment": per_moment,
    }


def best_recall_at_precision(late: np.ndarray, score: np.ndarray, precision: float) -> float:
    """The highest recall any threshold on `score` reaches while keeping `precision`.

    The threshold is chosen on the very orders judged, so this is a bound on what the
    scorer's ranking allows, not a figure a deployed threshold would get.
    """
    late = np.asarray(late, dtype=bool)
    if not late.any():
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype="float64"), kind="stable")
    hits = np.cumsum(late[order])
    flagged = np.arange(1, len(order) + 1)
    ok = (hits / flagged >= precision) & (flagged >= 10)
    return float(hits[ok].max() / late.sum()) if ok.any() else 0.0


def _targets_met(scorer: dict[str, float], baseline: dict[str, float]) -> dict[str, bool]:
    return {
        "auc": scorer["auc"] >= TARGETS["auc"],
        "precision": scorer["precision"] >= TARGETS["precision"],
        "recall": scorer["recall"] >= TARGETS["recall"],
        "f1_lead": scorer["f1"] >= baseline["f1"] + TARGETS["f1_lead"],
    }


def _days_after(moments: pd.Series, as_of: datetime) -> np.ndarray:
    delta = pd.to_datetime(moments, utc=True) - pd.Timestamp(as_of)
    return (delta.dt.total_seconds() / DAY).to_numpy(dtype="float64")


def write_report(target: Path, orders: int, days: float) -> dict[str, Path]:
    """Render the analytics report of world A at the last scoring time into `target`."""
    from buffalo_assets.analytics.durations import order_stage_durations
    from buffalo_assets.analytics.kpis import delivery_kpis
    from buffalo_assets.analytics.report import render_report
    from buffalo_assets.analytics.status import order_status_now

    book = make_book(orders, days, **WORLDS["A"])
    clean, events = world_frames(book, SCORING_TIME)
    as_of = datetime.fromtimestamp(SCORING_TIME, UTC)
    durations = order_stage_durations(events, as_of)
    status = order_status_now(clean, durations, as_of)
    kpis = delivery_kpis(status, durations, as_of, events=events)
    history = build_history(clean, events, as_of)
    trained = train_delay_model(history)
    risk = score_in_flight(trained.model, in_flight_features(history), as_of)
    page, figures = render_report(status, kpis, risk, trained.evaluation, generated_at=as_of)
    target.mkdir(parents=True, exist_ok=True)
    written = {"html": target / "report.html"}
    written["html"].write_text(page)
    for name, png in figures.items():
        written[name] = target / f"analytics-{name.replace('_', '-')}.png"
        written[name].write_bytes(png)
    return written


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scale(orders: int, changed: int) -> dict[str, Any]:
    """Training + scoring time and peak RSS at `orders` orders; then rescoring `changed` of them.

    The frames are built in one process and read by a second one, which only does what the
    analytics assets do (hold the core tables, train, score), so its peak RSS is theirs.
    """
    book = make_book(orders, 180.0, seed=WORLDS["A"]["seed"])
    started = time.perf_counter()
    clean, events = world_frames(book, SCORING_TIME)
    prepared = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        frames = Path(folder) / "frames.pkl"
        pd.to_pickle((clean, events), frames)
        del clean, events
        out = subprocess.run(
            [sys.executable, "-m", "bench.delay", "--scale-from", str(frames), "--changed", str(changed)],
            check=True,
            capture_output=True,
            text=True,
        )
    return {"orders": orders, "prepare_seconds": prepared, **json.loads(out.stdout.strip().splitlines()[-1])}


def scale_from(frames: Path, changed: int) -> dict[str, Any]:
    clean, events = pd.read_pickle(frames)  # noqa: S301 - written by this benchmark a moment ago
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    as_of = datetime.fromtimestamp(SCORING_TIME, UTC)
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    history = build_history(clean, events, as_of)
    trained = train_delay_model(history)
    risk = score_in_flight(trained.model, in_flight_features(history), as_of)
    full = time.perf_counter() - started
    full_cpu = _cpu_seconds() - cpu_started
    stored = trained.model.to_bytes()

    # Incremental: a refresh changed some orders; rebuild the index, rescore only those.
    travelling = risk["order_id"].head(changed)
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    model = DelayModel.from_bytes(stored)
    history = build_history(clean, events, as_of)
    rescored = score_in_flight(model, in_flight_features(history, travelling), as_of)
    incremental = time.perf_counter() - started
    incremental_cpu = _cpu_seconds() - cpu_started
    return {
        "events": int(len(events)),
        "train_and_score_seconds": full,
        "train_and_score_cpu_seconds": full_cpu,
        "train_seconds": trained.seconds,
        "training_rows": trained.model.training_rows,
        "scored": int(len(risk)),
        "model_bytes": len(stored),
        "rescored": int(len(rescored)),
        "incremental_seconds": incremental,
        "incremental_cpu_seconds": incremental_cpu,
        "load_average_1min": os.getloadavg()[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_with_tables_loaded_mb": rss_loaded,
        "cpu_count": os.cpu_count(),
    }


def _table(worlds: list[dict[str, Any]]) -> str:
    lines = [
        f"{'world':6} {'who':9} {'AUC':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'MAE d':>6} {'R@P.8*':>6}"
    ]
    for world in worlds:
        for row in world["results"]:
            lines.append(
                f"{world['world']:6} {row['who']:9} {row['auc']:6.3f} {row['precision']:6.3f} "
                f"{row['recall']:6.3f} {row['f1']:6.3f} {row['mae_days']:6.2f} "
                f"{row['best_recall_at_precision']:6.3f}"
            )
        missed = [k for k, ok in world["targets_met"].items() if not ok]
        beyond = [k for k, ok in world["ceiling_targets_met"].items() if not ok]
        lines.append(
            f"{'':6} {world['evaluated']} orders evaluated ({world['evaluated_late_share']:.0%} late); "
            f"targets missed: {', '.join(missed) or 'none'}; "
            f"missed by the ceiling itself: {', '.join(beyond) or 'none'}"
        )
    lines.append("R@P.8*: best recall at precision >= 0.8 with the threshold chosen in hindsight")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20_000, help="orders per world (scale: orders to time)")
    parser.add_argument("--days", type=float, default=180.0)
    parser.add_argument("--scale-orders", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument(
        "--worlds",
        default="A,B",
        help="comma-separated worlds to evaluate: A, B (the evaluation) or dev, dev2 (for development)",
    )
    parser.add_argument("--scale-only", action="store_true", help="only the scale step (--orders orders)")
    parser.add_argument(
        "--scale-from", type=Path, default=None, help="internal: time training on these frames"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--report", type=Path, default=None, help="only render world A's report into this folder"
    )
    args = parser.parse_args(argv)

    if args.report is not None:
        for name, path in write_report(args.report, args.orders, args.days).items():
            print(f"{name:24} {path}")
        return {}

    if args.scale_from is not None:
        report = scale_from(args.scale_from, args.changed)
        print(json.dumps(report))
        return report
    if args.scale_only:
        report = {"when": datetime.now(UTC).isoformat(), "scale": scale(args.orders, args.changed)}
        _print_scale(report["scale"])
        write_results(report, args.json, f"delay-scale-{args.orders}")
        return report

    known = {**WORLDS, **DEV_WORLDS}
    chosen = [name.strip() for name in args.worlds.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        parser.error(f"--worlds: unknown world(s) {', '.join(unknown)}; known: {', '.join(known)}")
    worlds = []
    for name in chosen:
        params = known[name]
        result = evaluate_world(name, args.orders, args.days, params)
        worlds.append(result)
        print(
            f"world {name}: prepared in {result['prepare_seconds']:.0f}s, "
            f"model trained {len(MOMENTS)} times in {result['train_seconds']:.0f}s",
            flush=True,
        )
    print(_table(worlds))
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "worlds": worlds}
    if not args.skip_scale:
        report["scale"] = scale(args.scale_orders, args.changed)
        _print_scale(report["scale"])
    write_results(report, args.json, "delay" if chosen == list(WORLDS) else f"delay-{'-'.join(chosen)}")
    return report


def _print_scale(s: dict[str, Any]) -> None:
    print(
        f"scale  {s['orders']} orders ({s['events']} events): "
        f"train + score {s['train_and_score_seconds']:.1f}s wall, "
        f"{s['train_and_score_cpu_seconds']:.1f}s CPU "
        f"({s['training_rows']} training rows, {s['scored']} scored), peak RSS {s['peak_rss_mb']:.0f} MB "
        f"({s['rss_with_tables_loaded_mb']:.0f} MB with the tables loaded); "
        f"rescoring {s['rescored']} changed orders {s['incremental_seconds']:.1f}s "
        f"(load average {s['load_average_1min']:.1f} on {s['cpu_count']} CPUs)"
    )


if __name__ == "__main__":
    main()
