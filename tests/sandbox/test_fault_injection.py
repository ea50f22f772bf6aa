"""Scripted faults, played over real loopback sockets (and the plan on its own)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from knai.testing import (
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    Fault,
    RunningSandbox,
    SandboxAdminError,
)
from knai.testing._faults import FaultPlan

from .conftest import CHARGE_PATH, PROTOCOL_HEADERS, STATUS_PATH, charge_headers

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME
AMOUNT = 100
BODY: dict[str, object] = {"amount_tokens": AMOUNT, "model": "gpt-4"}


@pytest.fixture
def wire(server: RunningSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        yield client


@pytest.fixture
def token(server: RunningSandbox) -> str:
    return server.admin.open_session(SLUG, USER).session_token


def _charge(
    wire: httpx.Client, token: str, key: str | None = None, timeout: float = 5.0
) -> httpx.Response:
    return wire.post(CHARGE_PATH, json=BODY, headers=charge_headers(token, key), timeout=timeout)


def _status(wire: httpx.Client) -> httpx.Response:
    return wire.get(STATUS_PATH, params={"provider_username": USER}, headers=PROTOCOL_HEADERS)


def test_status_fault_answers_503_with_retry_after_and_charges_nothing(
    server: RunningSandbox, wire: httpx.Client, token: str
) -> None:
    server.admin.inject_fault("charge", status=503, retry_after=2)

    failed = _charge(wire, token)
    passed = _charge(wire, token)

    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "2"
    assert failed.json() == {"error": "Injected fault 503"}
    assert failed.headers["x-request-id"].startswith("req_")
    assert passed.status_code == 200
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE - AMOUNT


def test_faults_fire_in_fifo_order_for_their_count_then_stop(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    server.admin.inject_fault("status", status=503, times=2)
    server.admin.inject_fault("status", status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")

    codes = [_status(wire).status_code for _ in range(4)]

    assert codes == [503, 503, 429, 200]
    stats = server.admin.stats()
    assert stats.requests == {"status": 4, "charge": 0}
    assert stats.faults_fired == {"status": 3, "charge": 0}


def test_a_fault_can_answer_a_custom_json_or_plain_text_body(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    server.admin.inject_fault("status", status=500, body={"message": "upstream down"})
    server.admin.inject_fault("status", status=502, body="<html>Bad gateway</html>")

    as_json, as_text = _status(wire), _status(wire)

    assert (as_json.status_code, as_json.json()) == (500, {"message": "upstream down"})
    assert as_text.status_code == 502
    assert as_text.text == "<html>Bad gateway</html>"
    assert as_text.headers["content-type"].startswith("text/plain")


def test_delay_answers_late_then_normally(server: RunningSandbox, wire: httpx.Client) -> None:
    server.admin.inject_fault("status", delay=0.3)

    started = time.perf_counter()
    response = _status(wire)

    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 200


def test_client_timeout_during_a_delay_still_lets_the_server_apply_the_charge(
    server: RunningSandbox, wire: httpx.Client, token: str
) -> None:
    server.admin.inject_fault("charge", delay=0.3)

    with pytest.raises(httpx.ReadTimeout):
        _charge(wire, token, timeout=0.05)

    deadline = time.monotonic() + 3
    while server.admin.balance(SLUG, USER) == DEMO_BALANCE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE - AMOUNT


def test_drop_before_is_a_transport_error_and_charges_nothing(
    server: RunningSandbox, wire: httpx.Client, token: str
) -> None:
    server.admin.inject_fault("charge", drop="before")

    with pytest.raises(httpx.TransportError):
        _charge(wire, token, key="k-1")

    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE
    assert server.admin.charges(SLUG, USER) == []
    assert _charge(wire, token, key="k-1").status_code == 200  # nothing was recorded either


def test_drop_after_charges_once_and_the_same_key_replays_that_charge(
    server: RunningSandbox, wire: httpx.Client, token: str
) -> None:
    server.admin.inject_fault("charge", drop="after")

    with pytest.raises(httpx.TransportError):
        _charge(wire, token, key="order-7")
    [applied] = server.admin.charges(SLUG, USER)
    retry = _charge(wire, token, key="order-7")

    assert retry.status_code == 200
    assert retry.json()["charge_id"] == applied.charge_id
    assert retry.headers["idempotent-replayed"] == "true"
    assert server.admin.balance(SLUG, USER) == DEMO_BALANCE - AMOUNT
    assert len(server.admin.charges(SLUG, USER)) == 1


def test_drop_on_the_status_endpoint_is_a_transport_error(
    server: RunningSandbox, wire: httpx.Client
) -> None:
    server.admin.inject_fault("status", drop="before")
    with pytest.raises(httpx.RemoteProtocolError):
        _status(wire)
    assert _status(wire).status_code == 200


def test_a_deliberate_drop_logs_no_server_error(
    server: RunningSandbox, wire: httpx.Client, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.admin.inject_fault("charge", drop="after")
    with pytest.raises(httpx.RemoteProtocolError):
        _charge(wire, token)
    _status(wire)  # the server has finished the dropped request by the time it answers this

    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_faults_can_be_listed_and_cleared_per_endpoint(server: RunningSandbox) -> None:
    server.admin.inject_fault("charge", status=503, times=3)
    server.admin.inject_fault("status", delay=0.5)
    server.admin.inject_fault("charge", drop="after")

    pending = server.admin.faults()

    assert [(p.endpoint, p.remaining) for p in pending] == [
        ("status", 1),
        ("charge", 3),
        ("charge", 1),
    ]
    assert pending[1].fault == Fault(status=503)
    assert pending[2].fault == Fault(drop="after")
    assert server.admin.clear_faults("charge") == 2
    assert server.admin.clear_faults() == 1
    assert server.admin.faults() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"status": 503, "drop": "after"},
        {"status": 99},
        {"delay": -1.0},
        {"drop": "during"},
        {"retry_after": 1},
        {"status": 503, "times": 0},
    ],
)
def test_nonsense_faults_are_refused_422(server: RunningSandbox, kwargs: dict[str, object]) -> None:
    with pytest.raises(SandboxAdminError) as refused:
        server.admin.inject_fault("charge", **kwargs)  # type: ignore[arg-type]
    assert refused.value.status_code == 422


def test_unknown_endpoint_is_refused_422(server: RunningSandbox) -> None:
    with pytest.raises(SandboxAdminError, match="endpoint"):
        server.admin.inject_fault("refund", status=503)  # type: ignore[arg-type]


def test_fault_plan_counts_requests_and_pops_spent_faults() -> None:
    plan = FaultPlan()
    plan.add("charge", Fault(status=500), times=2)

    fired = [plan.next("charge") for _ in range(3)]

    assert fired == [Fault(status=500), Fault(status=500), None]
    stats = plan.stats()
    assert (stats.requests["charge"], stats.faults_fired["charge"]) == (3, 2)
    assert plan.pending() == []
