"""The transport's ticketed calls against a small real HTTP server: what requests used to do
for them (redirects, cookies, compressed bodies, reused connections) still happens now that
they go straight to urllib3's pool."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from buffalo_assets.buffalo.options import ClientOptions
from buffalo_assets.buffalo.transport import RetryingTransport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a reused connection with leftovers would show

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/moved"):
            self._send(302, b"<html>moved</html>", {"Location": "/detail?language=en"})
        elif self.path.startswith("/detail"):
            body = json.dumps({"name": "Zoë", "path": self.path}, ensure_ascii=False).encode()
            headers = {"Content-Type": "text/html"}  # no charset: still read as UTF-8
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
            self._send(200, body, headers)
        elif self.path.startswith("/cookie"):
            self._send(200, b"{}", {"Set-Cookie": "sid=abc; Path=/", "Content-Type": "application/json"})
        else:
            echo = {
                "target": self.path,
                "cookie": self.headers.get("Cookie"),
                "ticket": self.headers.get("Buffalo-Ticket"),
            }
            self._send(200, json.dumps(echo).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ticket() -> dict[str, str]:
    return {"Buffalo-Ticket": "t-1"}


def test_ticketed_calls_follow_redirects_and_read_compressed_utf8_bodies(server_url: str) -> None:
    transport = RetryingTransport(server_url, ClientOptions(backoff_base=0.01, max_attempts=2))
    try:
        for _ in range(3):  # the same pooled connections, one after another
            assert transport.request("GET", "/moved", credentials=_ticket) == {
                "name": "Zoë",
                "path": "/detail?language=en",
            }
            body = transport.request("GET", "/detail/7", credentials=_ticket, params={"language": "en"})
            assert body == {"name": "Zoë", "path": "/detail/7?language=en"}
        assert transport.stats.as_dict()["retries"] == 0
    finally:
        transport.close()


def test_cookies_the_service_sets_are_sent_back_on_later_ticketed_calls(server_url: str) -> None:
    transport = RetryingTransport(server_url, ClientOptions(backoff_base=0.01, max_attempts=2))
    try:
        first = transport.request("GET", "/echo", credentials=_ticket)
        assert first == {"target": "/echo", "cookie": None, "ticket": "t-1"}
        assert transport.request("GET", "/cookie", credentials=_ticket) == {}
        later = transport.request("GET", "/echo", credentials=_ticket)
        assert later == {"target": "/echo", "cookie": "sid=abc", "ticket": "t-1"}
    finally:
        transport.close()


def test_a_base_url_with_a_path_is_called_with_that_path_and_the_query(server_url: str) -> None:
    transport = RetryingTransport(server_url + "/api/", ClientOptions(backoff_base=0.01, max_attempts=2))
    try:
        body = transport.request(
            "GET", "/echo/1", credentials=_ticket, params={"pageNum": 2, "condition": ""}
        )
        assert body == {"target": "/api/echo/1?pageNum=2&condition=", "cookie": None, "ticket": "t-1"}
    finally:
        transport.close()
