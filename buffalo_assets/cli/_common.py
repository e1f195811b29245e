"""What several `buffalo` commands share: the demo's database and world record, child processes."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from buffalo_assets import settings


def demo_database_url(*, fresh: bool) -> str:
    """The demo's own database (BUFFALO_DEMO_DB, default buffalo_demo) on the usual server.

    Each demo starts a new sandbox world, so it starts from an empty database; the one in
    BUFFALO_PG_URL (or the embedded default) is never touched.
    """
    from sqlalchemy.engine import make_url

    from buffalo_assets.storage.database import database_url, recreate_database

    name = settings.load().demo_db
    if fresh:
        return recreate_database(database_url(), name)
    return make_url(database_url()).set(database=name).render_as_string(hide_password=False)


def demo_world_path() -> Path:
    """Where the demo records its sandbox world: beside its database, `.buffalo/<demo db>.sandbox.json`."""
    return settings.state_dir() / f"{settings.load().demo_db}.sandbox.json"


def figure(value: Any) -> str:
    """A figure for a summary; a missing one (None, NaN, not a number) as n/a."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "n/a"
    return f"{float(value):.3f}"


def run_child(command: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None = None) -> int:
    """Run `command` with exactly `env` (in `cwd`) until it ends; its exit code, 128 + N after signal N.

    Ctrl-C in the terminal reaches the child as well (it is in the same process group): this
    process then waits for the child to shut down. A SIGTERM sent to this process is passed on
    to the child, so stopping the `buffalo` process stops what it started.
    """
    import signal
    import threading

    process = subprocess.Popen(list(command), env=dict(env), cwd=cwd)

    def pass_on(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, pass_on) if in_main_thread else None
    try:
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C reached the child too: let it shut down
                continue
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 128 - code if code < 0 else code
