"""A sandbox world written down, so that it can be started again later: seed, size and clock.

The demo records the world it ingested (`.buffalo/<demo database>.sandbox.json`) and
`buffalo dev --demo` starts the same world again: the same orders (same seed, size, start
and the same clock moves, so the orders that arrived later arrive again at the same times),
with the clock moved on by the wall time since, so materializing from the UI continues the
demo's story instead of asking a different sandbox for orders it never had.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from buffalo_assets.sandbox.app import Sandbox, SandboxConfig
from buffalo_assets.sandbox.server import RunningSandbox, running_sandbox

FORMAT = 1


@dataclass(frozen=True)
class SandboxWorld:
    seed: int
    orders: int
    history_days: float
    start: float  # the sandbox clock when the world was made, epoch seconds
    username: str
    advances: list[float] = field(default_factory=list)  # each clock move, seconds, in order
    clock: float = 0.0  # the sandbox clock when recorded
    recorded_at: float = 0.0  # wall time when recorded
    delay_process: str = "customs"
    event_language: str = "en"

    @classmethod
    def of(cls, sandbox: Sandbox, advances: list[float]) -> SandboxWorld:
        config = sandbox.config
        if config.start is None:
            raise ValueError("only a sandbox started with an explicit clock (`start`) can be recorded")
        return cls(
            seed=config.seed,
            orders=config.orders,
            history_days=config.history_days,
            start=config.start,
            username=config.username,
            advances=list(advances),
            clock=sandbox.now,
            recorded_at=time.time(),
            delay_process=config.delay_process,
            event_language=config.event_language,
        )

    def config(self) -> SandboxConfig:
        """The sandbox configuration that makes this world (the password is the sandbox default)."""
        return SandboxConfig(
            orders=self.orders,
            seed=self.seed,
            username=self.username,
            start=self.start,
            history_days=self.history_days,
            delay_process=self.delay_process,
            event_language=self.event_language,
        )

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n")
        temporary.replace(path)  # never a half-written record
        return path

    @classmethod
    def load(cls, path: Path) -> SandboxWorld:
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path} is not a sandbox world record: {exc}") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"{path} is not a sandbox world record of format {FORMAT}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path} is not a sandbox world record: {exc}") from None


@contextmanager
def running_world(world: SandboxWorld, *, now: float | None = None) -> Iterator[RunningSandbox]:
    """The recorded world served again: its clock moves replayed, then moved on to `now`.

    The clock ends at least where it was recorded, plus the wall time since the recording
    (default: now), so the orders have moved on as they would have.
    """
    with running_sandbox(world.config()) as running:
        for seconds in world.advances:
            running.sandbox.advance(seconds)
        since = max(0.0, (time.time() if now is None else now) - world.recorded_at)
        behind = world.clock - running.sandbox.now
        running.sandbox.advance(max(0.0, behind) + since)
        yield running
