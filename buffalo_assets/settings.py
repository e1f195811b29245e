"""Where the platform keeps its local state, and the environment variables it reads.

Every setting comes from the environment (or a `.env` file in the project folder); the
README's "Settings" table lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

# The sandbox the quickstart and tests start when no real API is configured.
SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8765
SANDBOX_USERNAME = "demo@solo.example"
SANDBOX_PASSWORD = "buffalo-sandbox"  # noqa: S105 - public default of the local simulator


def project_dir() -> Path:
    """The project folder: `BUFFALO_HOME`, else the nearest folder up from here with a workspace.yaml."""
    configured = os.environ.get("BUFFALO_HOME")
    if configured:
        return Path(configured).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "workspace.yaml").exists():
            return folder
    return cwd


def state_dir() -> Path:
    """Local state (embedded database, Dagster artifacts): `<project>/.buffalo`."""
    return project_dir() / ".buffalo"


def load_environment() -> None:
    """Read `<project>/.env` into the environment without overriding what is already set."""
    load_dotenv(project_dir() / ".env", override=False)


def apply_sandbox_defaults() -> bool:
    """Point the Buffalo settings at the local sandbox when no real API is configured.

    Returns whether the sandbox defaults were applied. Values already set win, so a
    configured username or password is never overwritten.
    """
    if os.environ.get("BUFFALO_BASE_URL"):
        return False
    os.environ["BUFFALO_BASE_URL"] = f"http://{SANDBOX_HOST}:{SANDBOX_PORT}"
    os.environ.setdefault("BUFFALO_USERNAME", SANDBOX_USERNAME)
    os.environ.setdefault("BUFFALO_PASSWORD", SANDBOX_PASSWORD)
    return True


def env_flag(name: str, *, default: bool) -> bool:
    """A yes/no setting: true/1/yes/on or false/0/no/off (case-insensitive)."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")
