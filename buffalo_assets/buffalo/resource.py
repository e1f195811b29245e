"""The Buffalo API as a Dagster resource: typed settings, secrets from the environment."""

from __future__ import annotations

import threading
import time

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from buffalo_assets import settings
from buffalo_assets.buffalo.client import BuffaloClient
from buffalo_assets.buffalo.options import ClientOptions

# A ticket older than this is not reused: a fresh login gets a new one.
TICKET_REUSE_S = 600.0


class TicketCache:
    """The tickets one resource got, by account, and when; safe to share between threads.

    `login` serialises logins of the same resource: threads that need a ticket at once wait
    for the first one's login and use its ticket rather than each logging in.
    """

    def __init__(self) -> None:
        self._tickets: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def logged_in(self, client: BuffaloClient) -> None:
        """Give `client` this cache's recent ticket for its account, else log it in (and keep its ticket).

        Raises what `client.login()` raises.
        """
        with self._lock:
            obtained, ticket = self._tickets.get(client.account, (0.0, None))
            if ticket is not None and time.monotonic() - obtained < TICKET_REUSE_S:
                client.use_ticket(ticket)
                return
            client.login()
            self._keep(client)

    def remember(self, client: BuffaloClient) -> None:
        """Keep the client's ticket if a later login (a ticket the API dropped) replaced it."""
        with self._lock:
            self._keep(client)

    def _keep(self, client: BuffaloClient) -> None:
        if client.ticket is not None and self._tickets.get(client.account, (0.0, None))[1] != client.ticket:
            self._tickets[client.account] = (time.monotonic(), client.ticket)


class BuffaloResource(ClientOptions, ConfigurableResource):
    """Connection settings for the Buffalo API and the client's options (`ClientOptions`).

    `get_client()` gives a logged-out client, `logged_in_client()` one with a ticket: the
    ticket this resource got last (a run's steps, and a step's retries, log in once), else a
    fresh login. Dagster makes the resource anew for each run, so runs never share tickets.

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
    _tickets: TicketCache = PrivateAttr(default_factory=TicketCache)

    def get_client(self) -> BuffaloClient:
        base_url, username, password = self._connection()
        return BuffaloClient(base_url, username, password, self.client_options())

    def logged_in_client(self) -> BuffaloClient:
        """A client holding a ticket; raises BuffaloAuthError / BuffaloApiError as `login()` does."""
        client = self.get_client()
        try:
            self._tickets.logged_in(client)
        except BaseException:
            client.close()
            raise
        return client

    def remember_ticket(self, client: BuffaloClient) -> None:
        """Keep the ticket a client got by logging in again (its old one was dropped by the API)."""
        self._tickets.remember(client)

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
