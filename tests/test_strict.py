"""The strict sandbox proves what the client sends, and the client survives the real API's ways.

Issue 12, items 1-5 and 10: each rule of the strict sandbox lets the client through and
refuses a raw request missing the item; new shapes and faults (string and $numberLong ids,
403, 504, Retry-After dates, non-ASCII text, JSON labelled text/html or text/plain, missing
keys, busy list pages, expiry in any language) are survived; non-ASCII text arrives in
raw and core byte-exact.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from Crypto.Cipher import PKCS1_v1_5
from Crypto.PublicKey import RSA
from dagster import DagsterInstance

from buffalo_assets.buffalo.client import (
    OWN_LOGINS_PER_CALL,
    BuffaloApiError,
    BuffaloAuthError,
    BuffaloClient,
    FetchedOrder,
    FetchFailure,
    encrypt_password,
)
from buffalo_assets.buffalo.options import ClientOptions
from buffalo_assets.sandbox.app import detail_referer
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.faults import EXPIRY_STYLES, FaultPlan
from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import ROOT, SandboxFactory
from tests.pipeline import EVERYTHING, run
from tests.test_sandbox import login_ticket

LIST = "/mobileapi/myorder/orderList"
LIST_PARAMS = {"condition": "", "status": 0, "pageNum": 1, "language": "en", "tableIndex": 0}
FAST_RETRIES = {"backoff_base": 0.02, "backoff_max": 0.2, "read_timeout": 1.0}


def client_for(running: RunningSandbox, **options: Any) -> BuffaloClient:
    config = running.sandbox.config
    return BuffaloClient(running.url, config.username, config.password, ClientOptions(**options))


def ticket_of(running: RunningSandbox) -> str:
    config = running.sandbox.config
    return login_ticket(running.url, config.username, config.password)


def truth_ids(running: RunningSandbox) -> set[str]:
    return {row["order_id"] for row in SandboxControl(running.url).truth()}


# -- item 1: strict by default, one test per rule ---------------------------------------------


def test_strict_a_ticketed_call_without_the_buffalo_ticket_header_gets_a_401(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=20)
    with client_for(running) as client:
        assert len(list(client.iter_order_ids())) == 20
    ticket = ticket_of(running)
    only_authorization = requests.get(
        running.url + LIST, params=LIST_PARAMS, headers={"Authorization": ticket}, timeout=10
    )
    assert only_authorization.status_code == 401
    assert not only_authorization.json().get("data")
    assert running.sandbox.stats["strict.missing_ticket"] == 1


@pytest.mark.parametrize("missing", ["status", "tableIndex", "language"])
def test_strict_a_list_call_without_status_table_index_or_language_gets_a_400(
    start_sandbox: SandboxFactory, missing: str
) -> None:
    running = start_sandbox(orders=20)
    with client_for(running) as client:
        assert len(list(client.iter_order_ids())) == 20
    ticket = ticket_of(running)
    params = {k: v for k, v in LIST_PARAMS.items() if k != missing}
    answer = requests.get(
        running.url + LIST,
        params=params,
        headers={"Authorization": ticket, "Buffalo-Ticket": ticket},
        timeout=10,
    )
    assert answer.status_code == 400
    assert missing in answer.json()["msg"]
    assert running.sandbox.stats["strict.list_params"] == 1


def test_strict_a_detail_call_without_the_documented_referer_gets_a_400(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=5)
    with client_for(running) as client:
        assert client.fetch_detail("31000002")["id"] == 31000002
    ticket = ticket_of(running)
    headers = {"Authorization": ticket, "Buffalo-Ticket": ticket}
    url = f"{running.url}/mobileapi/myorder/detail/31000002"
    without = requests.get(url, params={"language": "en"}, headers=headers, timeout=10)
    other_order = requests.get(
        url, params={"language": "en"}, headers={**headers, "Referer": detail_referer("31000003")}, timeout=10
    )
    assert without.status_code == other_order.status_code == 400
    assert "Referer" in without.json()["msg"]
    assert running.sandbox.stats["strict.referer"] == 2


def _login(
    running: RunningSandbox, password: str, content_type: str = "application/json;charset=UTF-8"
) -> Any:
    return requests.post(
        f"{running.url}/buffalo/login",
        data=json.dumps({"username": running.sandbox.config.username, "password": password}),
        headers={"Content-Type": content_type},
        timeout=10,
    )


def test_strict_a_login_whose_password_is_not_percent_encoded_pkcs1_base64_is_refused(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=1)
    config = running.sandbox.config
    with client_for(running) as client:
        client.login()
    key_text = requests.get(f"{running.url}/buffalo/getRsaPublicKey", timeout=10).text
    key = RSA.import_key(base64.b64decode(key_text))
    ciphertext = PKCS1_v1_5.new(key).encrypt(config.password.encode())
    bare_base64 = base64.b64encode(ciphertext).decode()  # not percent-encoded: has '=' (and + /)
    refused = [_login(running, bare_base64), _login(running, config.password)]
    assert all(r.status_code == 200 and not r.json()["data"] for r in refused)
    assert running.sandbox.stats["logins.malformed"] == 2
    accepted = _login(running, encrypt_password(config.password, key_text))
    assert accepted.json()["data"]["ticket"]


def test_strict_a_login_without_the_json_content_type_gets_a_400(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=1)
    config = running.sandbox.config
    with client_for(running) as client:
        client.login()
    key_text = requests.get(f"{running.url}/buffalo/getRsaPublicKey", timeout=10).text
    answer = _login(running, encrypt_password(config.password, key_text), content_type="text/plain")
    assert answer.status_code == 400
    assert "Content type" in answer.json()["msg"]
    assert running.sandbox.stats["strict.login_content_type"] == 1


# -- item 2: new shapes and faults ---------------------------------------------------------------


def test_every_shape_of_a_varied_order_is_served_and_read_as_the_same_order(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=40, variation_rate=1.0)
    book, now = running.sandbox.book, running.sandbox.now
    ticket = ticket_of(running)
    headers = {"Authorization": ticket, "Buffalo-Ticket": ticket}
    page = requests.get(running.url + LIST, params=LIST_PARAMS, headers=headers, timeout=10)
    ids = [item["id"] for item in page.json()["data"]["resultMap"]["list"]]
    assert any(isinstance(i, str) for i in ids) and any(
        isinstance(i, dict) and "$numberLong" in i for i in ids
    )
    detail = requests.get(
        f"{running.url}/mobileapi/myorder/detail/31000001",
        params={"language": "en"},
        headers={**headers, "Referer": detail_referer("31000001")},
        timeout=10,
    )
    assert detail.headers["Content-Type"] in {"text/html", "text/plain"}  # no charset
    order = json.loads(detail.content.decode("utf-8"))
    assert "thirdnumber" not in order or order["thirdnumber"] is not None  # left out, not null
    assert re.search(r"[\u4e00-\u9fff]", order["receiveaddress"]) and re.search(
        "[êëôéû]", order["receiveaddress"]
    )
    with client_for(running) as client:
        listed = list(client.iter_order_ids())
        fetched = {r.order_id: r.payload for r in client.fetch_details(listed) if isinstance(r, FetchedOrder)}
    assert set(listed) == truth_ids(running) and len(listed) == 40
    assert fetched == {str(book.order_id(i)): book.detail(i, now) for i in range(40)}  # non-ASCII exact
    assert any("🙂" in str(p.get("receivername")) for p in fetched.values())
    assert any("thirdnumber" not in p for p in fetched.values())  # not yet handed over: key left out
    assert not any(value is None for p in fetched.values() for value in p.values())


def test_403_504_busy_pages_and_retry_after_dates_are_survived(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(
        orders=150,
        faults=FaultPlan(
            forbidden=0.08,
            gateway_timeout=0.08,
            busy=0.3,
            rate_limit=0.03,
            retry_after_format="date",
            retry_after_s=0.01,
        ),
    )
    with client_for(running, concurrency=4, max_attempts=8, **FAST_RETRIES) as client:
        listed = list(client.iter_order_ids())
        results = list(client.fetch_details(listed))
    assert set(listed) == truth_ids(running)
    assert all(isinstance(r, FetchedOrder) for r in results) and len(results) == 150
    injected = running.sandbox.stats
    assert all(injected[f"faults.{k}"] > 0 for k in ("forbidden", "gateway_timeout", "busy", "rate_limit"))
    reasons = client.stats.as_dict()["retry_reasons"]
    assert {"http_504", "rate_limited"} <= set(reasons)
    assert client.stats.relogins >= 1  # a 403 on a ticketed call gets a fresh ticket


def test_a_403_page_on_the_key_or_the_login_is_retried_not_a_refused_login(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=5, faults=FaultPlan(forbidden=0.5))
    with client_for(running, **FAST_RETRIES) as client:
        for _ in range(4):
            client.login()
    assert running.sandbox.stats["faults.forbidden"] > 0
    assert client.stats.logins == 4


# -- item 3: expiry detection without English words ----------------------------------------------


@pytest.mark.parametrize("style", EXPIRY_STYLES)
def test_an_expired_ticket_reported_in_any_style_costs_one_shared_fresh_login(
    start_sandbox: SandboxFactory, style: str
) -> None:
    running = start_sandbox(orders=120, faults=FaultPlan(latency_ms=5, expiry_style=style))
    with client_for(running, concurrency=8) as client:
        ids = list(client.iter_order_ids())
        results = []
        for result in client.fetch_details(ids):
            results.append(result)
            if len(results) == 40:
                assert running.sandbox.expire_tickets() == 1
    assert all(isinstance(r, FetchedOrder) for r in results) and len(results) == 120
    assert client.stats.relogins == 1
    assert running.sandbox.stats["auth.rejected"] >= 1


def test_a_gone_order_is_classified_only_after_a_fresh_ticket_gets_the_same_answer(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=10)
    SandboxControl(running.url).mark_gone("31000004")
    with client_for(running) as client:
        client.login()
        running.sandbox.stats.clear()
        [failure] = list(client.fetch_details(["31000004"]))
    assert isinstance(failure, FetchFailure) and failure.kind == "detail_error"
    assert "does not exist" in failure.message
    assert client.stats.relogins == 1
    assert running.sandbox.stats["requests.detail"] == 2  # the first ticket, then a fresh one


def test_a_service_that_answers_every_fresh_ticket_with_an_auth_code_fails_after_the_documented_logins(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=5, faults=FaultPlan(ticket_ttl_s=1e-6, expiry_style="english"))
    with client_for(running) as client, pytest.raises(BuffaloAuthError) as raised:
        client.fetch_detail("31000001")
    assert f"after {OWN_LOGINS_PER_CALL} fresh logins" in str(raised.value)
    assert running.sandbox.stats["logins.ok"] == 1 + OWN_LOGINS_PER_CALL


# -- item 5: a list page with an error envelope is retried like a 503 ---------------------------


def test_a_busy_list_page_is_retried_and_a_page_that_stays_busy_fails_within_the_budget(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=450, faults=FaultPlan(busy=0.3))
    with client_for(running, **FAST_RETRIES) as client:
        assert set(client.iter_order_ids()) == truth_ids(running)
    assert running.sandbox.stats["faults.busy"] > 0
    SandboxControl(running.url).set_faults(busy=1.0)
    running.sandbox.stats.clear()
    with client_for(running, **FAST_RETRIES) as client, pytest.raises(BuffaloApiError) as raised:
        list(client.iter_order_ids())
    assert raised.value.kind == "error_envelope" and raised.value.retryable
    assert "system busy" in str(raised.value) and "gave up after 6 attempts" in str(raised.value)
    assert running.sandbox.stats["requests.list"] == 7  # one with a fresh ticket, then 6 like a 503


# -- item 4: JSON is UTF-8 whatever the Content-Type; non-ASCII stored byte-exact ----------------


def test_non_ascii_text_served_as_text_html_or_plain_is_stored_byte_exact_in_raw_and_core(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, empty_store: sa.Engine
) -> None:
    running = start_sandbox(orders=60, variation_rate=1.0, shapes=("non_ascii", "loose_content_type"))
    book, now = running.sandbox.book, running.sandbox.now
    assert run(running, pg_url, instance, EVERYTHING).success
    expected = {str(book.order_id(i)): book.detail(i, now) for i in range(60)}
    with empty_store.connect() as connection:
        raw = dict(connection.execute(sa.text("SELECT order_id, payload FROM raw.order_versions")).all())
        addresses = dict(connection.execute(sa.text("SELECT order_id, address FROM core.clean_orders")).all())
        goods = connection.execute(
            sa.text("SELECT order_id, box_index, line_index, description FROM core.order_items")
        ).all()
        events = connection.execute(sa.text("SELECT order_id, description FROM core.order_events")).all()
    assert raw == expected
    assert {k: a.encode() for k, a in addresses.items()} == {
        k: d["receiveaddress"].encode() for k, d in expected.items()
    }
    assert all(
        text.encode() == expected[o]["boxList"][b - 1]["detaillist"][line - 1]["goodsname"].encode()
        for o, b, line, text in goods
    )
    assert sorted((o, t.encode()) for o, t in events) == sorted(
        (o, r["content"].encode()) for o, d in expected.items() for r in d["recordMap"]
    )
    assert any("已" in t for _, t in events) and any("🎧" in t or "📱" in t for *_, t in goods)


# -- the documentation says what the code does about re-logins -----------------------------------


def test_the_docs_state_the_relogin_bounds_the_code_uses() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    section = architecture.split("## The Buffalo client", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    assert f"gives up after {OWN_LOGINS_PER_CALL} logins of its own" in flat
    assert "one fresh login shared by all threads" in flat
    assert "one re-login" in flat and "no data and a non-success code" in flat


def test_an_unknown_shape_is_refused_naming_it_and_the_known_ones() -> None:
    from click.testing import CliRunner

    from buffalo_assets.cli import main

    result = CliRunner().invoke(main, ["sandbox", "--shapes", "non_ascii,emoji_ids"])
    assert result.exit_code == 2
    assert "unknown shapes: emoji_ids" in result.output and "loose_content_type" in result.output
