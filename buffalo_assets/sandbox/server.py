"""Running the sandbox: in a background thread (tests, the demo) or in the foreground (CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from buffalo_assets.sandbox.app import Sandbox, SandboxConfig, create_app


class _HideInjectedResets(logging.Filter):
    """Dropped connections are injected on purpose; their tracebacks are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "_ConnectionDropped"


def _uvicorn_config(sandbox: Sandbox, host: str, port: int, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_HideInjectedResets())
    return uvicorn.Config(
        create_app(sandbox),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=30,
        backlog=2048,
        lifespan="off",
    )


def serve_forever(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground until interrupted (`buffalo sandbox`)."""
    uvicorn.Server(_uvicorn_config(Sandbox(config), host, port, "info")).run()


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    url: str


@contextmanager
def running_sandbox(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSandbox]:
    """A sandbox served from a background thread for the duration of the block."""
    sandbox = Sandbox(config or SandboxConfig())
    if port == 0:
        port = free_port(host)
    server = uvicorn.Server(_uvicorn_config(sandbox, host, port, "warning"))
    thread = threading.Thread(target=server.run, name="buffalo-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield RunningSandbox(sandbox, f"http://{host}:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
