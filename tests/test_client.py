"""The Buffalo client against a real sandbox over real sockets."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from buffalo_assets.buffalo.client import (
    BuffaloApiError,
    BuffaloAuthError,
    BuffaloClient,
    FetchedOrder,
    FetchFailure,
    normalize_order_id,
    unwrap_detail,
)
from buffalo_assets.buffalo.options import ClientOptions
from buffalo_assets.sandbox.control import SandboxControl
from buffalo_assets.sandbox.faults import FAILURE_KINDS, LIST_ONLY_KINDS, FaultPlan
from buffalo_assets.sandbox.server import RunningSandbox
from tests.conftest import SandboxFactory

FAST_RETRIES = {"backoff_base": 0.02, "backoff_max": 0.2, "read_timeout": 1.0}


def client_for(running: RunningSandbox, **options: object) -> BuffaloClient:
    config = running.sandbox.config
    return BuffaloClient(running.url, config.username, config.password, ClientOptions(**options))


def truth_ids(running: RunningSandbox) -> set[str]:
    return {row["order_id"] for row in SandboxControl(running.url).truth()}


def test_login_gives_a_ticket_that_the_api_accepts(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=20)
    with client_for(running) as client:
        client.login()
        first_page = next(client.iter_order_pages())
    assert len(first_page.order_ids) == 15
    assert first_page.record_total == 20
    assert client.stats.logins == 1


def test_wrong_password_raises_auth_error_with_the_services_reason(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=5)
    client = BuffaloClient(running.url, running.sandbox.config.username, "not-the-password")
    with pytest.raises(BuffaloAuthError) as raised:
        client.login()
    message = str(raised.value)
    assert "refused" in message
    assert "Incorrect username or password" in message
    assert running.sandbox.config.username in message
    assert "not-the-password" not in message


def test_every_id_of_a_1000_order_account_is_listed_exactly_once(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=1_000)
    with client_for(running) as client:
        ids = list(client.iter_order_ids())
    assert len(ids) == 1_000
    assert set(ids) == truth_ids(running)
    # Newest first, as the real list is.
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True)


def test_orders_arriving_during_paging_neither_duplicate_nor_drop_ids(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=1_000)
    before = truth_ids(running)
    listed: list[str] = []
    with client_for(running) as client:
        for page in client.iter_order_pages():
            listed.extend(page.order_ids)
            if page.number in (2, 10, 40):
                running.sandbox.add_orders(4)  # shifts every later page by four
    assert len(listed) == len(set(listed))
    assert before <= set(listed)


def test_every_detail_arrives_despite_20_percent_faults_of_every_kind(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(
        orders=300,
        faults=FaultPlan.mixed(0.2, slow_ms=1500, retry_after_s=0.2, detail_envelope="mixed"),
    )
    with client_for(running, concurrency=8, max_attempts=8, **FAST_RETRIES) as client:
        ids = list(client.iter_order_ids())
        results = list(client.fetch_details(ids))
    failures = [r for r in results if isinstance(r, FetchFailure)]
    assert failures == []
    assert {r.order_id for r in results} == truth_ids(running)
    assert all(r.payload["id"] == int(r.order_id) for r in results if isinstance(r, FetchedOrder))
    stats = client.stats.as_dict()
    assert stats["retries"] > 30
    assert {"rate_limited", "http_502", "http_503", "http_504", "invalid_json", "timeout"} <= set(
        stats["retry_reasons"]
    )
    assert (
        stats["retry_reasons"].get("truncated_body", 0) + stats["retry_reasons"].get("connection_error", 0)
        > 0
    )
    injected = running.sandbox.stats
    # Busy envelopes are served on list pages only (their own test is below).
    assert all(injected[f"faults.{kind}"] > 0 for kind in FAILURE_KINDS if kind not in LIST_ONLY_KINDS)
    assert any(r.attempts > 1 for r in results)


def test_an_expired_ticket_mid_run_costs_exactly_one_fresh_login(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=200, faults=FaultPlan(latency_ms=5))
    with client_for(running, concurrency=8) as client:
        ids = list(client.iter_order_ids())
        results = []
        for result in client.fetch_details(ids):
            results.append(result)
            if len(results) == 60:
                assert running.sandbox.expire_tickets() == 1
    assert all(isinstance(r, FetchedOrder) for r in results)
    assert len(results) == 200
    assert client.stats.relogins == 1
    assert running.sandbox.stats["auth.rejected"] >= 1


def test_short_lived_tickets_and_rotating_keys_are_survived(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=120, rotate_keys=True, faults=FaultPlan(ticket_ttl_s=0.3, latency_ms=10))
    with client_for(running, concurrency=4) as client:
        results = list(client.fetch_details(client.iter_order_ids()))
    assert all(isinstance(r, FetchedOrder) for r in results)
    assert len(results) == 120
    assert client.stats.relogins >= 1


def test_a_permanently_failing_order_is_reported_while_the_others_succeed(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=50)
    with client_for(running) as client:
        ids = list(client.iter_order_ids())
        gone = ids[7]
        SandboxControl(running.url).mark_gone(gone)
        results = list(client.fetch_details(ids))
    failures = [r for r in results if isinstance(r, FetchFailure)]
    assert [f.order_id for f in failures] == [gone]
    assert failures[0].kind == "detail_error"
    assert "does not exist" in failures[0].message
    assert sum(isinstance(r, FetchedOrder) for r in results) == 49


def test_requests_in_flight_never_exceed_the_concurrency_setting(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=200, faults=FaultPlan(latency_ms=20))
    with client_for(running, concurrency=6) as client:
        ids = list(client.iter_order_ids())
        running.sandbox.stats.clear()
        list(client.fetch_details(ids))
    assert 2 <= running.sandbox.stats["max_in_flight"] <= 6


def test_a_response_over_the_size_cap_is_refused(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=5)
    with client_for(running, max_response_bytes=300) as client:
        results = list(client.fetch_details(["31000001"]))
    assert isinstance(results[0], FetchFailure)
    assert results[0].kind == "too_large"


def test_giving_up_after_the_retry_budget_names_the_endpoint_and_reason(
    start_sandbox: SandboxFactory,
) -> None:
    running = start_sandbox(orders=5, faults=FaultPlan(server_error=1.0))
    client = client_for(running, max_attempts=2, **FAST_RETRIES)
    with pytest.raises(BuffaloApiError) as raised:
        client.login()  # an unavailable service is not a refused login: a later run may succeed
    assert raised.value.retryable
    assert "/buffalo/getRsaPublicKey" in str(raised.value)
    assert "gave up after 6 attempts" in str(raised.value)  # logins get at least 6 tries
    assert "HTTP 50" in str(raised.value)


def test_a_detail_gets_exactly_max_attempts_tries(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=5)
    with client_for(running, max_attempts=3, **FAST_RETRIES) as client:
        client.login()
        SandboxControl(running.url).set_faults(server_error=1.0)
        [failure] = list(client.fetch_details(["31000001"]))
    assert isinstance(failure, FetchFailure)
    assert failure.attempts == 3
    assert failure.kind in {"http_502", "http_503"}
    assert "gave up after 3 attempts" in failure.message


def test_no_password_or_ticket_appears_in_logs_reprs_or_errors(
    start_sandbox: SandboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Pw-7f3c!unusual/secret+=="
    running = start_sandbox(orders=60, password=password, faults=FaultPlan.mixed(0.3, retry_after_s=0.05))
    texts: list[str] = []
    with client_for(running, concurrency=4, **FAST_RETRIES) as client:
        results = list(client.fetch_details(client.iter_order_ids()))
        running.sandbox.expire_tickets()
        texts.append(repr(client))
        texts.extend(f.message for f in results if isinstance(f, FetchFailure))
        SandboxControl(running.url).set_faults(rate=0, reject_logins=True)
        running.sandbox.expire_tickets()
        with pytest.raises(BuffaloAuthError) as raised:
            list(client.fetch_details(["31000001"]))
        texts.append(str(raised.value))
    wrong = BuffaloClient(running.url, "someone", password + "x")
    with pytest.raises(BuffaloAuthError) as raised_wrong:
        wrong.login()
    texts.append(str(raised_wrong.value))
    texts.append(caplog.text)
    secrets = {password, password + "x"} | running.sandbox.secrets_seen
    assert len(running.sandbox.secrets_seen) >= 4  # tickets and encrypted passwords were issued
    everything = "\n".join(texts)
    leaked = [s for s in secrets if s and s in everything]
    assert leaked == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(123, "123"), ("  456 ", "456"), ({"$numberLong": "789"}, "789"), (12.0, "12")],
)
def test_order_ids_are_accepted_as_ints_strings_and_mongodb_longs(raw: object, expected: str) -> None:
    assert normalize_order_id(raw) == expected


@pytest.mark.parametrize("raw", [None, "", True, {"id": 1}, [1], 1.5])
def test_values_that_are_not_order_ids_are_rejected(raw: object) -> None:
    with pytest.raises(ValueError, match="not an order id"):
        normalize_order_id(raw)


def test_bare_and_wrapped_details_unwrap_to_the_same_order() -> None:
    order = {"id": 1, "statusname": "Delivered", "newField": [1]}
    assert unwrap_detail(order) == order
    assert unwrap_detail({"code": 200, "msg": "ok", "data": order}) == order
    assert unwrap_detail({"code": 500, "msg": "Order does not exist", "data": None}) is None
    assert unwrap_detail(["not", "a", "detail"]) is None


def test_api_errors_say_which_endpoint_failed_and_how() -> None:
    error = BuffaloApiError("http_error", "/mobileapi/myorder/detail/9", "Not Found", status=404)
    assert str(error) == "http_error from /mobileapi/myorder/detail/9 (HTTP 404): Not Found"


def test_login_survives_truncated_and_html_answers_to_every_step(start_sandbox: SandboxFactory) -> None:
    running = start_sandbox(orders=5, faults=FaultPlan(truncated=0.15, html=0.15))
    reasons: set[str] = set()
    for _ in range(30):
        with client_for(running, **FAST_RETRIES) as client:
            client.login()
            reasons |= set(client.stats.as_dict()["retry_reasons"])
    assert "bad_public_key" in reasons and "invalid_json" in reasons


def test_tls_certificates_are_verified_for_the_real_api_with_a_configurable_ca_bundle(tmp_path) -> None:  # noqa: ANN001
    from buffalo_assets.buffalo.resource import BuffaloResource

    default = BuffaloResource(base_url="https://index.buffaloex.com", username="u", password="p").get_client()
    assert default.transport.verify not in (False, None)
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    custom = BuffaloResource(
        base_url="https://index.buffaloex.com", username="u", password="p", ca_bundle=str(bundle)
    ).get_client()
    assert custom.transport.verify == str(bundle)


def test_the_resources_client_and_settings_share_one_set_of_client_options() -> None:
    from buffalo_assets.buffalo.options import DEFAULTS
    from buffalo_assets.buffalo.resource import BuffaloResource
    from buffalo_assets.settings import Settings

    resource = BuffaloResource(base_url="https://index.buffaloex.com", username="u", password="p")
    assert resource.client_options() == DEFAULTS
    with resource.get_client() as client:
        assert (client.concurrency, client.max_attempts) == (DEFAULTS.concurrency, DEFAULTS.max_attempts)
    with BuffaloClient("https://index.buffaloex.com", "u", "p") as plain:
        assert plain.concurrency == DEFAULTS.concurrency  # a script's client: the same defaults
    defaults_from_settings = Settings(_env_file=None).client_options()  # nothing set anywhere
    assert defaults_from_settings == DEFAULTS
    # What the Dagster UI's launchpad shows for the resource comes from the same declaration.
    fields = BuffaloResource.model_fields
    assert fields["concurrency"].description == ClientOptions.model_fields["concurrency"].description
    with pytest.raises(ValueError, match="concurrency"):
        ClientOptions(concurrency=0)


def test_one_resource_logs_in_once_for_threads_asking_at_once_and_another_resource_logs_in_itself(
    start_sandbox: SandboxFactory,
) -> None:
    from buffalo_assets.buffalo.resource import BuffaloResource

    running = start_sandbox(orders=30, faults=FaultPlan(latency_ms=50))
    config = running.sandbox.config
    resource = BuffaloResource(base_url=running.url, username=config.username, password=config.password)
    with ThreadPoolExecutor(6) as pool:
        clients = list(pool.map(lambda _: resource.logged_in_client(), range(6)))
    try:
        assert running.sandbox.stats["logins.ok"] == 1
        assert len({client.ticket for client in clients}) == 1
        assert clients[0].fetch_detail(next(clients[0].iter_order_ids()))  # the shared ticket works
    finally:
        for client in clients:
            client.close()
    other = BuffaloResource(base_url=running.url, username=config.username, password=config.password)
    other.logged_in_client().close()
    assert running.sandbox.stats["logins.ok"] == 2
