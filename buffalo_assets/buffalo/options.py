"""How the client talks to the Buffalo API: the one definition of its options and defaults.

`BuffaloClient` and `RetryingTransport` take a `ClientOptions`; the Dagster resource
(`BuffaloResource`) is a `ClientOptions` too, so its run-config fields, their defaults and
their descriptions are these; the settings (`BUFFALO_CONCURRENCY`, ...) default to them.
Plain pydantic: scripts and benchmarks use the client without Dagster.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ClientOptions(BaseModel):
    """Concurrency, pacing, timeouts, retries, TLS and the response size cap."""

    concurrency: int = Field(default=16, ge=1, description="Order-detail requests in flight at once")
    requests_per_second: float = Field(
        default=0.0, ge=0, description="Upper bound on the request rate; 0 means no bound"
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a connection")
    read_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for response bytes")
    max_attempts: int = Field(default=6, ge=1, description="Tries per request before giving up")
    backoff_base: float = Field(
        default=0.5, ge=0, description="First retry waits about this long, s; doubling"
    )
    backoff_max: float = Field(default=30.0, ge=0, description="Longest wait between two tries, s")
    max_retry_after: float = Field(
        default=120.0, ge=0, description="Longest Retry-After the client honours, s; longer ones are capped"
    )
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate")
    ca_bundle: str | None = Field(default=None, description="CA bundle file for TLS, if not the default")
    max_response_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1, description="Larger responses are refused and the order quarantined"
    )

    @property
    def verify(self) -> bool | str:
        """What `requests` takes as `verify`: the CA bundle, or whether to verify at all."""
        return self.ca_bundle if (self.verify_tls and self.ca_bundle) else self.verify_tls

    def client_options(self) -> ClientOptions:
        """These options alone (from a subclass such as the Dagster resource, just the options)."""
        return ClientOptions(**{name: getattr(self, name) for name in ClientOptions.model_fields})


DEFAULTS = ClientOptions()
