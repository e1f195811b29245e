"""Run a local Airflow (what `make airflow` does): every component, on 127.0.0.1, or exit.

`airflow standalone` starts its components by running `airflow` from PATH (which need
not hold the virtualenv's bin), binds its API server to 0.0.0.0, and hangs when a
component dies. This script instead:

- puts this interpreter's bin directory first on PATH for every component;
- migrates the metadata database (`airflow db migrate`), then starts the API server
  (Airflow 3; the webserver on Airflow 2) on AIRFLOW_HOST:AIRFLOW_PORT (default
  127.0.0.1:8080), the scheduler (LocalExecutor), the DAG processor (Airflow 3) and the
  triggerer, each in its own process group; the scheduler and triggerer without their log
  servers (`--skip-serve-logs`: Airflow binds those to every interface, and on one machine
  the API server reads the task logs from disk), so nothing listens beyond 127.0.0.1;
- sets the `dagster_default` connection from DAGSTER_URL when AIRFLOW_CONN_DAGSTER_DEFAULT
  is not set;
- exits non-zero, stopping the others, as soon as any component exits; Ctrl-C or SIGTERM
  stops them all and exits 0.

Run it with the Airflow virtualenv's interpreter: `airflow/.venv/bin/python airflow/supervise.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
STOP_GRACE_S = 20.0


def environment() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.setdefault("AIRFLOW_HOME", str(HERE.parent / ".buffalo" / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(HERE / "dags"))
    # The Connections page's Test button (off by default in Airflow): the Dagster connection
    # type answers it (DagsterHook.test_connection).
    env.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    host, port = env.setdefault("AIRFLOW_HOST", "127.0.0.1"), env.setdefault("AIRFLOW_PORT", "8080")
    # Airflow 3's task workers report to the API server's execution API.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{host}:{port}/execution/")
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://{host}:{port}")
    if "AIRFLOW_CONN_DAGSTER_DEFAULT" not in env:
        env["AIRFLOW_CONN_DAGSTER_DEFAULT"] = env.get("DAGSTER_URL") or "http://127.0.0.1:3000"
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def components(env: dict[str, str]) -> dict[str, list[str]]:
    host, port = env["AIRFLOW_HOST"], env["AIRFLOW_PORT"]
    if int(version("apache-airflow").split(".")[0]) >= 3:
        return {
            "api-server": ["airflow", "api-server", "--host", host, "--port", port],
            "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
            "dag-processor": ["airflow", "dag-processor"],
            "triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
        }
    return {
        "webserver": ["airflow", "webserver", "--hostname", host, "--port", port],
        "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
        "triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
    }


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> int:
    env = environment()
    print(f"airflow: home {env['AIRFLOW_HOME']}, Dagster connection dagster_default", flush=True)
    migrated = subprocess.run(["airflow", "db", "migrate"], env=env, check=False)
    if migrated.returncode != 0:
        print(f"airflow: `airflow db migrate` failed (exit {migrated.returncode})", file=sys.stderr)
        return migrated.returncode or 1

    processes: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for name, command in components(env).items():
        try:
            processes[name] = subprocess.Popen(command, env=env, start_new_session=True)
        except OSError as error:
            print(f"airflow: could not start {name} ({' '.join(command)}): {error}", file=sys.stderr)
            stop(processes)
            return 1
    print(
        f"airflow: {', '.join(processes)} started; UI on http://{env['AIRFLOW_HOST']}:{env['AIRFLOW_PORT']}",
        flush=True,
    )
    while not stopping:
        for name, process in processes.items():
            code = process.poll()
            if code is not None:
                print(f"airflow: {name} exited with code {code}; stopping the others", file=sys.stderr)
                stop(processes)
                return code or 1
        time.sleep(0.5)
    stop(processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
