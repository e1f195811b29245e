"""End-to-end benchmark: the ingest command a user types, timed from the command to its exit.

    python -m bench.e2e                                        # 1,500 orders, 50 ms: all three
    python -m bench.e2e --orders 100000 --latency-ms 20 --skip-baseline --skip-dlt --repeat 1
    python -m bench.e2e --orders 1000000 --latency-ms 20    # ingest, transform, analytics: about 1 h

Side by side in one run, against one sandbox served by a separate process:
  (a) baseline: the original sequential pipeline (`bench.ingest.baseline`, in this process);
  (b) ours: `dagster asset materialize -m buffalo_assets.definitions --select
      order_ids,raw_orders` as a subprocess, on a Dagster instance made from the checkout's
      dagster.yaml (runs and events in PostgreSQL), as docs/getting-started.md shows it;
  (c) dlt: its `rest_api` source doing the same fetch-and-load (bench/dlt_peer.py, run by the
      bench's own virtualenv bench/.venv-dlt: `make bench-venv`), with as many workers as
      our concurrency.
Each loads into its own scratch database on the same PostgreSQL server. The instance's and
the platform's tables are created before the clock starts (a user's first `buffalo dev`
does that once). (b) and (c) run `--repeat` times each (3), taking turns, each time into a
new database; their median runs are compared (the same command varies by a second from run
to run on a 2-core machine). Prints a table and the targets, writes JSON to bench/results/.

With `--steps ingest,transform,analytics` (the default from 1,000,000 orders on) it runs the
whole first load once, as three commands one after another: the ingest above, then
`--select group:core` (the transform and its checks), then `--select group:analytics`
(every analytics asset and check). For each: seconds, CPU, the command's peak RSS (from the
kernel, for the process and anything it started), the peak RSS while each Dagster step ran
(sampled every 0.1 s), and the database's size afterwards, by schema. No baseline or dlt.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance
from sqlalchemy.engine import URL, make_url

from bench import write_results
from bench.ingest import baseline, start_sandbox
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME
from buffalo_assets.storage.database import create_engine, database_url, drop_database, recreate_database
from buffalo_assets.storage.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
DLT_PYTHON = ROOT / "bench" / ".venv-dlt" / "bin" / "python"
# The documented command (docs/getting-started.md), run by the same virtualenv as this benchmark.
COMMAND = [
    str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
    "-m", "buffalo_assets.definitions", "--select", "order_ids,raw_orders",
]  # fmt: skip
TARGETS = {"baseline_over_ours_min": 15.0, "ours_over_dlt_max": 0.6, "orders_per_s_min_at_100k": 800.0}
# The whole first load: each step is the same command with another selection.
SELECTIONS = {"ingest": "order_ids,raw_orders", "transform": "group:core", "analytics": "group:analytics"}
WHOLE_FROM = 1_000_000  # orders from which --steps defaults to all three
PEAK_RSS_MB_MAX = 2048.0
SAMPLE_EVERY_S = 0.1


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(phase: Callable[[], dict[str, Any]], sandbox_pid: int) -> dict[str, Any]:
    """A phase's own figures, with the load before it and the CPU it and the sandbox used."""
    before = load()
    sandbox_cpu, own_cpu, children_cpu = cpu_seconds(sandbox_pid), time.process_time(), children_cpu_seconds()
    figures = phase()
    return {
        **figures,
        "load_before": before,
        "cpu_s": round(time.process_time() - own_cpu + children_cpu_seconds() - children_cpu, 2),
        "sandbox_cpu_s": round(cpu_seconds(sandbox_pid) - sandbox_cpu, 2),
    }


@contextmanager
def instance_at(home: Path, pg_url: str) -> Iterator[DagsterInstance]:
    """The Dagster instance of DAGSTER_HOME `home`, whose storage reads BUFFALO_PG_URL."""
    saved = os.environ.get("BUFFALO_PG_URL")
    os.environ["BUFFALO_PG_URL"] = pg_url
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        if saved is None:
            os.environ.pop("BUFFALO_PG_URL", None)
        else:
            os.environ["BUFFALO_PG_URL"] = saved


def prepare_instance(home: Path, pg_url: str) -> None:
    """DAGSTER_HOME as `buffalo dev` makes it, its tables and the platform's schemas created."""
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    with instance_at(home, pg_url):
        pass
    engine = create_engine(pg_url)
    upgrade(engine)
    engine.dispose()


def _env(url: str, pg_url: str, home: Path, concurrency: int) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BUFFALO_PG_URL": pg_url,
        "BUFFALO_BASE_URL": url,
        "BUFFALO_USERNAME": SANDBOX_USERNAME,
        "BUFFALO_PASSWORD": SANDBOX_PASSWORD,
        "BUFFALO_CONCURRENCY": str(concurrency),
    }


class RssSampler(threading.Thread):
    """The resident set of one process, read from /proc every SAMPLE_EVERY_S, with the time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._done.is_set():
            try:
                lines = status.read_text().splitlines()
            except (FileNotFoundError, ProcessLookupError):
                return
            for line in lines:
                if line.startswith("VmRSS:"):
                    self.samples.append((time.time(), int(line.split()[1]) / 1024))
            self._done.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peak_between(self, start: float, end: float) -> float | None:
        inside = [mb for at, mb in self.samples if start <= at <= end]
        return round(max(inside), 1) if inside else None


def run_command(command: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `command` to its end: seconds, CPU and peak RSS (the kernel's, its children included)."""
    with tempfile.TemporaryFile() as stderr:
        started, wall_started = time.perf_counter(), time.time()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        sampler = RssSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds, wall_ended = time.perf_counter() - started, time.time()
        sampler.stop()
        if process.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(command[1:])} failed ({process.returncode}):\n{tail}")
    return {
        "seconds": seconds,
        "wall": (wall_started, wall_ended),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "sampler": sampler,
    }


def ours(url: str, pg_url: str, home: Path, concurrency: int) -> dict[str, Any]:
    done = run_command(COMMAND, _env(url, pg_url, home, concurrency))
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT count(*) FROM raw.order_versions")).scalar_one()
    engine.dispose()
    # What the assets recorded: the API work inside the command's time.
    steps = recorded(home, pg_url, ("order_ids", "raw_orders"), done)
    return {"seconds": done["seconds"], "orders": stored, "steps": steps}


def recorded(home: Path, pg_url: str, assets: Sequence[str], done: dict[str, Any]) -> dict[str, Any]:
    """The figures the assets recorded in their metadata, and the run's timeline."""
    steps: dict[str, Any] = {}
    with instance_at(home, pg_url) as instance:
        for name in assets:
            event = instance.get_latest_materialization_event(AssetKey(name))
            materialization = event.asset_materialization if event else None
            if materialization is None:
                continue
            for key in (
                "login_s",
                "fetch_s",
                "orders_per_s",
                "cpu_ms_per_order",
                "peak_rss_mb",
                "write_s",
                "pages",
                "parse_s",
                "orders_transformed",
            ):
                if key in materialization.metadata:
                    steps[f"{name}.{key}"] = materialization.metadata[key].value
        run = instance.get_runs(limit=1)[0]
        started, ended = done["wall"]
        steps.update(_timeline(instance.all_logs(run.run_id), started, ended, done["sampler"]))
    return steps


def database_size(pg_url: str) -> dict[str, float]:
    """The database's size in MB, and each schema's (tables, indexes and TOAST)."""
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        total = connection.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        schemas = connection.execute(
            sa.text(
                "SELECT n.nspname, sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'm', 'p') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "GROUP BY n.nspname ORDER BY 2 DESC"
            )
        ).all()
    engine.dispose()
    mb = 1024 * 1024
    sizes = {f"{name}_mb": round(size / mb, 1) for name, size in schemas}
    return {"database_mb": round(total / mb, 1), **sizes}


def whole(url: str, pg_url: str, home: Path, concurrency: int, steps: Sequence[str]) -> dict[str, Any]:
    """The first load, one command per step: time, CPU, peak RSS and the database's size after each."""
    env = _env(url, pg_url, home, concurrency)
    figures: dict[str, Any] = {}
    for step in steps:
        command = [*COMMAND[:-1], SELECTIONS[step]]
        print(f"{step}: {' '.join(command[1:])}", flush=True)
        done = run_command(command, env)
        graph = _asset_keys(SELECTIONS[step])
        figures[step] = {
            "seconds": round(done["seconds"], 2),
            "cpu_s": done["cpu_s"],
            "peak_rss_mb": done["peak_rss_mb"],
            "size_after": database_size(pg_url),
            "steps": recorded(home, pg_url, graph, done),
        }
        print(
            f"  {figures[step]['seconds']:.1f} s, {done['cpu_s']:.1f} s CPU, peak RSS "
            f"{done['peak_rss_mb']:.0f} MB, database {figures[step]['size_after']['database_mb']:.0f} MB",
            flush=True,
        )
    return figures


def _asset_keys(selection: str) -> list[str]:
    """The asset keys a step's selection names (a group's, or the listed keys)."""
    if not selection.startswith("group:"):
        return selection.split(",")
    from buffalo_assets.definitions import defs

    group = selection.removeprefix("group:")
    graph = defs.resolve_asset_graph()
    return sorted(
        key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).group_name == group
    )


def start_up_parts(repeat: int = 3) -> dict[str, float]:
    """Where the command's start-up goes: each part timed alone in fresh interpreters (medians).

    The interpreter; Dagster's CLI (`dagster --version` less the interpreter); importing the
    project's definitions (less importing Dagster, which the CLI has done). The rest of the
    command's start-up (the timeline's start_up_s) is the instance, its storage and the run's
    creation; the first login is in the step (raw_orders' login_s).
    """
    python = sys.executable
    commands = {
        "python": [python, "-c", "pass"],
        "import_dagster": [python, "-c", "import dagster"],
        "dagster_cli": [COMMAND[0], "--version"],
        "definitions": [python, "-c", "import buffalo_assets.definitions"],
    }
    seconds: dict[str, float] = {}
    for name, command in commands.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        seconds[name] = sorted(times)[(repeat - 1) // 2]
    parts = {
        "interpreter_s": seconds["python"],
        "dagster_cli_s": seconds["dagster_cli"] - seconds["python"],
        "definitions_s": seconds["definitions"] - seconds["import_dagster"],
    }
    return {f"start_up.{name}": round(value, 3) for name, value in parts.items()}


def _timeline(
    records: Sequence[Any], started: float, ended: float, sampler: RssSampler | None = None
) -> dict[str, float]:
    """Where the command's time went: start-up, each step, and the end after the last event.

    With a sampler, also the peak RSS of the command's process while each step ran.
    """
    marks: dict[str, float] = {}
    steps: list[str] = []
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type.name
        if kind in ("STEP_START", "STEP_SUCCESS") and event.step_key:
            marks[f"{event.step_key}.{kind}"] = record.timestamp
            if event.step_key not in steps:
                steps.append(event.step_key)
        elif kind in ("RUN_START", "RUN_SUCCESS"):
            marks[kind] = record.timestamp
    timeline = {"start_up_s": marks["RUN_START"] - started, "after_run_s": ended - marks["RUN_SUCCESS"]}
    steps = [step for step in steps if f"{step}.STEP_START" in marks and f"{step}.STEP_SUCCESS" in marks]
    for step in steps:
        start, end = marks[f"{step}.STEP_START"], marks[f"{step}.STEP_SUCCESS"]
        timeline[f"{step}.step_s"] = end - start
        peak = sampler.peak_between(start, end) if sampler else None
        if peak is not None:
            timeline[f"{step}.peak_rss_mb"] = peak
    timeline["outside_steps_s"] = (
        marks["RUN_SUCCESS"] - marks["RUN_START"] - sum(timeline[f"{step}.step_s"] for step in steps)
    )
    return {f"timeline.{k}": round(v, 3) for k, v in timeline.items()}


def _password_from(passfile: Path, url: URL) -> str:
    """The password a libpq password file gives for `url` (host:port:database:user:password)."""
    for line in passfile.read_text().splitlines():
        fields = line.split(":", 4)
        wanted = (url.host, str(url.port), url.database, url.username)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields[:4], wanted, strict=True)):
            return fields[4]
    raise SystemExit(f"{passfile} has no password for {url.render_as_string()}")


def dlt(url: str, pg_url: str, workers: int) -> dict[str, Any]:
    if not DLT_PYTHON.exists():
        raise SystemExit(f"{DLT_PYTHON} is missing: run `make bench-venv` (or pass --skip-dlt)")
    env = {**os.environ, "BUFFALO_USERNAME": SANDBOX_USERNAME, "BUFFALO_PASSWORD": SANDBOX_PASSWORD}
    env.pop("PYTHONPATH", None)
    # The embedded server's URL names a libpq password file (`?passfile=`), which dlt does
    # not read: the peer gets the password in its environment (never on its command line).
    url_parts = make_url(pg_url)
    if "passfile" in url_parts.query:
        env["PGPASSWORD"] = _password_from(Path(str(url_parts.query["passfile"])), url_parts)
        url_parts = url_parts.difference_update_query(["passfile"])
    dsn = url_parts.set(drivername="postgresql").render_as_string(hide_password=False)
    command = [
        str(DLT_PYTHON), str(ROOT / "bench" / "dlt_peer.py"),
        "--base-url", url, "--pg-url", dsn, "--workers", str(workers),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dlt failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"seconds": seconds, "orders": json.loads(done.stdout.strip().splitlines()[-1])["rows"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=1_500)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--concurrency", type=int, default=20, help="ours (BUFFALO_CONCURRENCY) and dlt's workers"
    )
    parser.add_argument("--history-days", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-baseline", action="store_true", help="(a) takes orders x latency seconds")
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of ours and of dlt, taking turns; the median counts"
    )
    parser.add_argument(
        "--steps",
        default=None,
        help="comma-separated, of ingest,transform,analytics: more than the ingest runs the whole "
        f"first load once, no baseline or dlt (default: ingest; all three from {WHOLE_FROM:,} orders)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args(argv)
    steps = (args.steps or ("ingest" if args.orders < WHOLE_FROM else ",".join(SELECTIONS))).split(",")
    if unknown := [step for step in steps if step not in SELECTIONS]:
        parser.error(f"--steps: unknown {', '.join(unknown)} (of {', '.join(SELECTIONS)})")
    if steps != ["ingest"]:
        return main_whole(args, [step for step in SELECTIONS if step in steps])

    server_url = database_url()
    names = ("ours", "peers")
    databases = {name: recreate_database(server_url, f"buffalo_bench_e2e_{name}") for name in names}
    sandbox, url = start_sandbox(args)
    home = Path(tempfile.mkdtemp(prefix="buffalo-bench-dagster-"))
    print(f"sandbox {url}: {args.orders} orders, {args.latency_ms:g} ms latency; load {load()}")
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "dlt": []}
    phases: dict[str, dict[str, Any]] = {}
    try:
        # The sandbox builds an order when first asked for it (a real server has it already):
        # build them all before the clock starts, so no phase pays for it (up to its cache size).
        SandboxControl(url).truth()
        if not args.skip_baseline:
            phases["baseline"] = measured(lambda: baseline(url, databases["peers"]), sandbox.pid)
            print(f"(a) baseline, sequential   {phases['baseline']['seconds']:8.2f} s")

        def run_ours() -> None:
            # Every run is a first run: a new database, its instance and platform tables made.
            databases["ours"] = recreate_database(server_url, "buffalo_bench_e2e_ours")
            prepare_instance(home, databases["ours"])
            figures = measured(lambda: ours(url, databases["ours"], home, args.concurrency), sandbox.pid)
            runs["ours"].append(figures)
            print(f"(b) ours, the command      {figures['seconds']:8.2f} s")

        def run_dlt() -> None:
            databases["peers"] = recreate_database(server_url, "buffalo_bench_e2e_peers")
            figures = measured(lambda: dlt(url, databases["peers"], args.concurrency), sandbox.pid)
            runs["dlt"].append(figures)
            print(f"(c) dlt rest_api           {figures['seconds']:8.2f} s")

        # Ours and dlt take turns (ours first, then dlt first, ...) so that neither always
        # runs right after the baseline or after the other; each phase reports its median run.
        order = [run_ours] if args.skip_dlt else [run_ours, run_dlt]
        for repeat in range(args.repeat):
            for take_turn in order if repeat % 2 == 0 else reversed(order):
                take_turn()
        for name, done in runs.items():
            if done:
                median = sorted(done, key=lambda figures: figures["seconds"])[(len(done) - 1) // 2]
                phases[name] = {**median, "runs_s": [round(figures["seconds"], 2) for figures in done]}
    finally:
        os.killpg(sandbox.pid, signal.SIGTERM)
        sandbox.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
        for name in names:
            drop_database(server_url, f"buffalo_bench_e2e_{name}")

    phases["ours"]["steps"].update(start_up_parts())
    mine = phases["ours"]["seconds"]
    ratios: dict[str, float] = {"orders_per_s": round(phases["ours"]["orders"] / mine, 1)}
    if "baseline" in phases:
        ratios["baseline_over_ours"] = round(phases["baseline"]["seconds"] / mine, 2)
    if "dlt" in phases:
        ratios["ours_over_dlt"] = round(mine / phases["dlt"]["seconds"], 3)
    report = {
        "when": datetime.now(UTC).isoformat(),
        "command": " ".join(COMMAND[1:]),
        "orders": args.orders,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "phases": phases,
        "ratios": ratios,
        "targets": TARGETS,
        "cpu_count": os.cpu_count(),
        "load_after": load(),
    }
    print()
    print(f"{'phase':12} {'seconds':>9} {'orders':>8} {'cpu s':>8} {'sandbox cpu s':>14} load before")
    for name, phase in phases.items():
        print(
            f"{name:12} {phase['seconds']:9.2f} {phase['orders']:8d} {phase['cpu_s']:8.2f} "
            f"{phase['sandbox_cpu_s']:14.2f} {phase['load_before']}"
        )
    for name, value in ratios.items():
        print(f"{name:22} {value:9.3f}")
    for name in ("ours", "dlt"):
        if name in phases:
            print(f"{name + ' runs (s)':22} {phases[name]['runs_s']}")
    for key, value in phases["ours"]["steps"].items():
        print(f"  {key:30} {value}")
    write_results(report, args.json, f"e2e-{args.orders}")
    return report


def main_whole(args: argparse.Namespace, steps: list[str]) -> dict[str, Any]:
    """The whole first load at scale, one command per step, each measured (`--steps`)."""
    if steps[0] != "ingest":
        raise SystemExit("--steps: the ingest comes first (the other steps read what it stored)")
    server_url = database_url()
    database = recreate_database(server_url, "buffalo_bench_e2e_ours")
    sandbox, url = start_sandbox(args)
    home = Path(tempfile.mkdtemp(prefix="buffalo-bench-dagster-"))
    print(f"sandbox {url}: {args.orders} orders, {args.latency_ms:g} ms latency; load {load()}", flush=True)
    try:
        started = time.perf_counter()
        SandboxControl(url).truth()
        print(f"sandbox orders built in {time.perf_counter() - started:.0f} s", flush=True)
        prepare_instance(home, database)
        before = load()
        sandbox_cpu = cpu_seconds(sandbox.pid)
        figures = whole(url, database, home, args.concurrency, steps)
        figures["ingest"]["sandbox_cpu_s"] = round(cpu_seconds(sandbox.pid) - sandbox_cpu, 2)
    finally:
        os.killpg(sandbox.pid, signal.SIGTERM)
        sandbox.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)
        drop_database(server_url, "buffalo_bench_e2e_ours")
    report = {
        "when": datetime.now(UTC).isoformat(),
        "commands": {step: " ".join([*COMMAND[1:-1], SELECTIONS[step]]) for step in steps},
        "orders": args.orders,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "steps": figures,
        "total_s": round(sum(step["seconds"] for step in figures.values()), 1),
        "peak_rss_mb_max": PEAK_RSS_MB_MAX,
        "cpu_count": os.cpu_count(),
        "load_before": before,
        "load_after": load(),
    }
    print()
    print(f"{'step':10} {'seconds':>9} {'cpu s':>8} {'peak RSS MB':>12} {'database MB':>12}")
    for name, step in figures.items():
        over = "  (over the 2 GB limit)" if step["peak_rss_mb"] > PEAK_RSS_MB_MAX else ""
        print(
            f"{name:10} {step['seconds']:9.1f} {step['cpu_s']:8.1f} {step['peak_rss_mb']:12.0f} "
            f"{step['size_after']['database_mb']:12.0f}{over}"
        )
    print(f"{'total':10} {report['total_s']:9.1f}")
    for name, step in figures.items():
        for key, value in {**step["steps"], **step["size_after"]}.items():
            print(f"  {name}.{key:40} {value}")
    write_results(report, args.json, f"e2e-whole-{args.orders}")
    return report


if __name__ == "__main__":
    main()
