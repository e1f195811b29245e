"""The sandbox honours the API contract of docs/buffalo-api.md and tells the truth."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import requests
from Crypto.PublicKey import RSA

from buffalo_assets.buffalo.client import BuffaloClient, encrypt_password
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.orders import STATUS_NAMES, OrderBook
from buffalo_assets.sandbox.server import free_port
from tests.conftest import SandboxFactory

LIST = "/mobileapi/myorder/orderList"


def login_ticket(url: str, username: str, password: str) -> str:
    key = requests.get(f"{url}/buffalo/getRsaPublicKey", timeout=10).text
    RSA.import_key(base64.b64decode(key))  # a base64 DER public key, as documented
    encoded = encrypt_password(password, key)
    assert "%" in encoded and "/" not in encoded and "+" not in encoded and "=" not in encoded
    response = requests.post(
        f"{url}/buffalo/login",
        data=json.dumps({"username": username, "password": encoded}),
        headers={"Content-Type": "application/json;charset=UTF-8"},
        timeout=10,
    )
    return response.json()["data"]["ticket"]


def test_login_returns_a_ticket_that_must_be_sent_in_both_headers(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=40)
    config = running.sandbox.config
    ticket = login_ticket(running.url, config.username, config.password)
    params = {"condition": "", "status": 0, "pageNum": 1, "language": "en", "tableIndex": 0}
    both = requests.get(
        running.url + LIST,
        params=params,
        headers={"Authorization": ticket, "Buffalo-Ticket": ticket},
        timeout=10,
    ).json()
    assert both["data"]["resultMap"]["recordTotal"] == 40
    assert len(both["data"]["resultMap"]["list"]) == 15
    without = requests.get(running.url + LIST, params=params, timeout=10)
    assert "data" not in without.json() or without.json().get("data") is None
    bearer = requests.get(
        running.url + LIST,
        params=params,
        headers={"Authorization": f"Bearer {ticket}", "Buffalo-Ticket": ticket},
        timeout=10,
    )
    assert not bearer.json().get("data")  # refused, in one of the sandbox's expiry styles


def test_a_wrong_password_gets_http_200_without_a_ticket(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=1)
    key = requests.get(f"{running.url}/buffalo/getRsaPublicKey", timeout=10).text
    response = requests.post(
        f"{running.url}/buffalo/login",
        data=json.dumps(
            {"username": running.sandbox.config.username, "password": encrypt_password("wrong", key)}
        ),
        headers={"Content-Type": "application/json;charset=UTF-8"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["data"] is None
    assert response.json()["msg"] == "Incorrect username or password"


def test_pages_are_newest_first_fifteen_each_and_end_with_an_empty_page(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=31)
    config = running.sandbox.config
    ticket = login_ticket(running.url, config.username, config.password)
    headers = {"Authorization": ticket, "Buffalo-Ticket": ticket}
    pages = []
    for number in (1, 2, 3, 4):
        body = requests.get(
            running.url + LIST,
            params={"condition": "", "status": 0, "pageNum": number, "language": "en", "tableIndex": 0},
            headers=headers,
            timeout=10,
        ).json()
        pages.append([item["id"] for item in body["data"]["resultMap"]["list"]])
    assert [len(p) for p in pages] == [15, 15, 1, 0]
    flat = [i for page in pages for i in page]
    assert flat == sorted(flat, reverse=True)


def test_orders_progress_when_the_clock_moves_and_details_match_the_truth(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=400, seed=11)
    control = SandboxControl(running.url)
    config = running.sandbox.config
    with BuffaloClient(running.url, config.username, config.password) as client:
        before = {r.order_id: r.payload for r in client.fetch_details(client.iter_order_ids())}
        moved = control.advance(days=3)
        after = {r.order_id: r.payload for r in client.fetch_details(client.iter_order_ids())}
    assert moved["new_orders"] > 0
    assert len(after) == 400 + moved["new_orders"]
    changed = [i for i in before if before[i] != after[i]]
    assert 0 < len(changed) < 400
    truth = {row["order_id"]: row for row in control.truth()}
    for order_id, detail in after.items():
        row = truth[order_id]
        assert detail["statusname"] == STATUS_NAMES[row["stage"]]
        assert len(detail["recordMap"]) == row["event_count"]
        items = sum(int(line["number"]) for box in detail["boxList"] for line in box["detaillist"])
        assert items == row["item_count"]
    stages = {row["stage"] for row in truth.values()}
    assert {"processing", "customs", "delivered"} <= stages


def test_the_same_seed_gives_the_same_orders_and_another_seed_other_ones() -> None:
    start = 1_780_000_000.0
    one = OrderBook(seed=1, count=100, start=start)
    same = OrderBook(seed=1, count=100, start=start)
    other = OrderBook(seed=2, count=100, start=start)
    assert one.detail(42, start) == same.detail(42, start)
    assert one.detail(42, start) != other.detail(42, start)


def test_a_100000_order_account_is_served_lazily(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=100_000)
    book = running.sandbox.book
    config = running.sandbox.config
    with BuffaloClient(running.url, config.username, config.password) as client:
        pages = client.iter_order_pages()
        first = next(pages)
        pages.close()
        detail = client.fetch_detail(first.order_ids[0])
    assert first.record_total == 100_000
    assert detail["id"] == 31_000_001 + 99_999
    assert book._plan.cache_info().currsize < 100  # nothing generated beyond what was asked


def test_variations_change_shapes_but_not_meaning(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=60, variation_rate=1.0)
    config = running.sandbox.config
    with BuffaloClient(running.url, config.username, config.password) as client:
        detail = client.fetch_detail("31000001")
    assert isinstance(detail["recordMap"][0]["createtime"], int)  # epoch milliseconds
    assert isinstance(detail["boxList"][0]["detaillist"][0]["declaredvalue"], str)
    assert "extMap" in detail
    plain = running.sandbox.book
    plain.variation_rate = 0.0
    plain._plan.cache_clear()
    assert (
        float(detail["boxList"][0]["detaillist"][0]["declaredvalue"])
        == plain.detail(0, running.sandbox.now)["boxList"][0]["detaillist"][0]["declaredvalue"]
    )


def test_the_buffalo_sandbox_command_serves_the_api(tmp_path) -> None:  # noqa: ANN001
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "buffalo_assets.cli",
            "sandbox",
            "--port",
            str(port),
            "--orders",
            "30",
            "--password",
            "cli-secret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = requests.get(f"{url}/_sandbox/status", timeout=1).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status["orders"] == 30
        with BuffaloClient(url, "demo@solo.example", "cli-secret") as client:
            assert len(list(client.iter_order_ids())) == 30
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_percent_encoding_escapes_every_base64_special_character() -> None:
    key = RSA.generate(1024)
    public = base64.b64encode(key.publickey().export_key(format="DER")).decode()
    encoded = encrypt_password("p", public)
    assert (
        quote(base64.b64encode(base64.b64decode(requests.utils.unquote(encoded))).decode(), safe="")
        == encoded
    )
