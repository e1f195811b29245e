"""The one place that wires the platform together: assets, resources, jobs, schedules.

Buffalo settings come from the environment (or `.env`); when `BUFFALO_BASE_URL` is unset
they point at the local sandbox and its documented default credentials.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from buffalo_assets import settings
from buffalo_assets.buffalo.resource import BuffaloResource

settings.load_environment()
settings.apply_sandbox_defaults()

buffalo = BuffaloResource(
    base_url=EnvVar("BUFFALO_BASE_URL"),
    username=EnvVar("BUFFALO_USERNAME"),
    password=EnvVar("BUFFALO_PASSWORD"),
    concurrency=int(os.environ.get("BUFFALO_CONCURRENCY", "16")),
    requests_per_second=float(os.environ.get("BUFFALO_REQUESTS_PER_SECOND", "0")),
    verify_tls=os.environ.get("BUFFALO_VERIFY_TLS", "true").lower() not in {"0", "false", "no"},
    ca_bundle=os.environ.get("BUFFALO_CA_BUNDLE") or None,
)

defs = Definitions(resources={"buffalo": buffalo})
