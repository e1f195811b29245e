"""The Buffalo API as a Dagster resource: typed settings, secrets from the environment."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from buffalo_assets.buffalo.client import BuffaloClient


class BuffaloResource(ConfigurableResource):
    """Connection settings for the Buffalo API; `get_client()` gives a logged-out client."""

    base_url: str = Field(description="Buffalo base URL, e.g. https://index.buffaloex.com")
    username: str = Field(description="Merchant account login")
    password: str = Field(description="Merchant account password (set it with an EnvVar)")
    concurrency: int = Field(default=16, description="Detail requests in flight at once")
    requests_per_second: float = Field(
        default=0.0, description="Upper bound on the request rate; 0 means no bound"
    )
    connect_timeout: float = Field(default=5.0, description="Seconds to wait for a connection")
    read_timeout: float = Field(default=30.0, description="Seconds to wait for response bytes")
    max_attempts: int = Field(default=6, description="Tries per request before giving up")
    backoff_base: float = Field(default=0.5, description="First retry waits about this long, s; doubling")
    backoff_max: float = Field(default=30.0, description="Longest wait between two tries, s")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate")
    ca_bundle: str | None = Field(default=None, description="CA bundle file for TLS, if not the default")
    max_response_bytes: int = Field(
        default=5 * 1024 * 1024, description="Larger responses are refused and the order quarantined"
    )

    def get_client(self) -> BuffaloClient:
        verify: bool | str = self.ca_bundle if (self.verify_tls and self.ca_bundle) else self.verify_tls
        return BuffaloClient(
            self.base_url,
            self.username,
            self.password,
            concurrency=self.concurrency,
            requests_per_second=self.requests_per_second,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            verify=verify,
            max_response_bytes=self.max_response_bytes,
        )
