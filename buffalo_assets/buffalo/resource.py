"""The Buffalo API as a Dagster resource: typed settings, secrets from the environment."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from buffalo_assets import settings
from buffalo_assets.buffalo.client import BuffaloClient


class BuffaloResource(ConfigurableResource):
    """Connection settings for the Buffalo API; `get_client()` gives a logged-out client.

    The URL and credentials are EnvVars when they were configured where the definitions were
    loaded; left unset, they are read from the settings when a client is made (so a value
    set later, or only in `.env`, still counts), and with no base URL anywhere the local
    sandbox and its public default credentials are used.
    """

    base_url: str | None = Field(
        default=None, description="Buffalo base URL (unset: BUFFALO_BASE_URL, else the sandbox)"
    )
    username: str | None = Field(default=None, description="Merchant account login (unset: BUFFALO_USERNAME)")
    password: str | None = Field(
        default=None, description="Merchant account password (an EnvVar; unset: BUFFALO_PASSWORD)"
    )
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
        base_url, username, password = self._connection()
        return BuffaloClient(
            base_url,
            username,
            password,
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

    def _connection(self) -> tuple[str, str, str]:
        if self.base_url and self.username and self.password:
            return self.base_url, self.username, self.password
        current = settings.load()
        base_url = self.base_url or current.base_url
        if not base_url:  # no real API anywhere: the sandbox with its documented defaults
            return settings.SANDBOX_URL, settings.SANDBOX_USERNAME, settings.SANDBOX_PASSWORD
        secret = current.password.get_secret_value() if current.password else None
        username, password = self.username or current.username, self.password or secret
        missing = [
            name
            for name, value in (("BUFFALO_USERNAME", username), ("BUFFALO_PASSWORD", password))
            if not value
        ]
        if missing:
            raise ValueError(f"{' and '.join(missing)} must be set to use the Buffalo API at {base_url}")
        assert username is not None and password is not None
        return base_url, username, password
