"""Scoring the orders in flight with reasons and drift, at 100,000 in flight.

    python -m bench.scoring                       # 100,000 in flight (about 2 minutes to prepare)
    python -m bench.scoring --in-flight 20000     # a smaller run

What `score_orders_in_flight` computes, without the database: index the core tables, take
the features of every order in flight, score them with the champion, give each order at
risk its reasons (the model asked again with each feature group at its typical value), and
compare the orders in flight with the champion's training window (drift).

The champion is trained on world A of `bench.delay` (20,000 orders over 180 days). The
orders it scores come from a dense world of the same process (another seed): orders
created over the last 21 days, enough of them that `--in-flight` are still travelling at
the scoring time. Each measured step runs in a process of its own, so its peak RSS is its
own: scoring without reasons (the baseline, run first), then with reasons and drift. The
figure that matters is the ratio of the two, measured in the same run, and the absolute
time and memory against the targets (60 s, 1 GB on 2 cores). Memory is the peak while
scoring, the input tables included; the transient peak of unpickling them is reported apart.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench import write_results
from bench.delay import SCORING_TIME, WORLDS
from bench.worlds import make_book, world_frames
from buffalo_assets.analytics.drift import drift
from buffalo_assets.analytics.features import build_history, in_flight_features
from buffalo_assets.analytics.model import (
    DEFAULT_FALSE_ALARM_COST,
    DelayModel,
    risk_threshold,
    score_in_flight,
    train_delay_model,
)
from buffalo_assets.analytics.reasons import latest_texts
from buffalo_assets.assets.analytics import EVENT_COLUMNS, ORDER_COLUMNS

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 1024.0
DENSE_DAYS = 21.0
IN_FLIGHT_SHARE = 0.55  # of a 21-day world's orders, about this share is still travelling
DENSE_SEED = 20261207


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(frames: Path, model_path: Path, reasons: bool) -> dict[str, Any]:
    """One scoring as the asset does it; run in its own process (`--measure`).

    The peak of loading the tables (unpickling holds the bytes and the frames at once) is
    kept apart from the peak while scoring: after loading, the kernel's peak counter is reset
    (`/proc/self/clear_refs`), so `peak_rss_mb` is the most the process held while it scored,
    the tables included.
    """
    clean, events = pd.read_pickle(frames)  # noqa: S301 - written by this benchmark a moment ago
    model = DelayModel.from_bytes(model_path.read_bytes())
    rss_load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_loaded = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    as_of = datetime.fromtimestamp(SCORING_TIME, UTC)
    threshold = risk_threshold(DEFAULT_FALSE_ALARM_COST)
    started, cpu = time.perf_counter(), _cpu_seconds()
    history = build_history(clean, events, as_of)
    features = in_flight_features(history)
    texts = latest_texts(events, features["order_id"], as_of) if reasons else None
    risk = score_in_flight(model, history, features, threshold, as_of, reasons=reasons, latest_texts=texts)
    drifted = 0
    if reasons and model.profile is not None:
        x = model.text.transform(history, features)[list(model.feature_columns)].to_numpy(dtype="float64")
        rows = drift(model.profile, x, model.feature_columns, None, 0, 0.25)
        drifted = sum(1 for row in rows if row["drifted"])
    return {
        "reasons": reasons,
        "in_flight": int(len(risk)),
        "at_risk": int(risk["at_risk"].sum()),
        "with_reasons": int(risk["reasons"].notna().sum()),
        "drifted_features": drifted,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu_seconds() - cpu,
        "peak_rss_mb": _status_mb("VmHWM"),
        "rss_with_tables_loaded_mb": rss_loaded,
        "loading_peak_rss_mb": rss_load_peak,
        "example": risk.loc[risk["reasons"].notna() & (risk["p_late"] < 1), "reasons"].head(3).tolist(),
    }


def run(in_flight: int) -> dict[str, Any]:
    started = time.perf_counter()
    train_book = make_book(20_000, 180.0, SCORING_TIME, **WORLDS["A"])
    clean, events = world_frames(train_book, SCORING_TIME)
    history = build_history(clean, events, datetime.fromtimestamp(SCORING_TIME, UTC))
    model = train_delay_model(history).model
    trained_s = time.perf_counter() - started
    orders = int(in_flight / IN_FLIGHT_SHARE)
    dense = make_book(orders, DENSE_DAYS, SCORING_TIME, seed=DENSE_SEED, delay_process="customs")
    started = time.perf_counter()
    clean, events = world_frames(dense, SCORING_TIME)
    prepared_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        frames, model_path = Path(folder) / "frames.pkl", Path(folder) / "model.pkl"
        # What the asset reads: only the columns its inputs ask the IO manager for.
        pd.to_pickle((clean[ORDER_COLUMNS], events[EVENT_COLUMNS]), frames)
        model_path.write_bytes(model.to_bytes())
        del clean, events
        steps = {}
        for reasons in (False, True):
            out = subprocess.run(
                [sys.executable, "-m", "bench.scoring", "--measure", str(frames), str(model_path)]
                + (["--with-reasons"] if reasons else []),
                check=True,
                capture_output=True,
                text=True,
            )
            steps["with_reasons" if reasons else "without_reasons"] = json.loads(
                out.stdout.strip().splitlines()[-1]
            )
    full, bare = steps["with_reasons"], steps["without_reasons"]
    return {
        "when": datetime.now(UTC).isoformat(),
        "dense_world_orders": orders,
        "train_seconds": trained_s,
        "prepare_seconds": prepared_s,
        **steps,
        "reasons_cost_ratio": full["seconds"] / bare["seconds"],
        "targets": {"seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB},
        "met": {
            "seconds": full["seconds"] < TARGET_SECONDS,
            "peak_rss_mb": full["peak_rss_mb"] < TARGET_RSS_MB,
        },
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-flight", type=int, default=100_000, help="orders in flight to score")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--measure", nargs=2, type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--with-reasons", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        report = measure(args.measure[0], args.measure[1], args.with_reasons)
        print(json.dumps(report))
        return report
    report = run(args.in_flight)
    full, bare = report["with_reasons"], report["without_reasons"]
    print(
        f"scoring {full['in_flight']:,} orders in flight ({full['at_risk']:,} at risk, "
        f"{full['with_reasons']:,} with reasons): {full['seconds']:.1f} s wall, "
        f"{full['cpu_seconds']:.1f} s CPU, peak RSS {full['peak_rss_mb']:.0f} MB "
        f"({full['rss_with_tables_loaded_mb']:.0f} MB holding the tables; loading them peaked at "
        f"{full['loading_peak_rss_mb']:.0f} MB); "
        f"without reasons and drift {bare['seconds']:.1f} s, {bare['peak_rss_mb']:.0f} MB: "
        f"reasons cost {report['reasons_cost_ratio']:.2f}x; targets {TARGET_SECONDS:.0f} s / "
        f"{TARGET_RSS_MB:.0f} MB: {'met' if all(report['met'].values()) else 'missed'} "
        f"(load average {report['load_average_1min']:.1f} on {report['cpu_count']} CPUs)"
    )
    for example in full["example"]:
        print(f"  e.g. {example}")
    write_results(report, args.json, f"scoring-{args.in_flight}")
    return report


if __name__ == "__main__":
    main()
