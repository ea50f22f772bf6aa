"""The in-process transports: real-server behaviour without a socket, and no leaks."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from knai.testing import (
    DEMO_BALANCE,
    DEMO_PROVIDER_SLUG,
    DEMO_USERNAME,
    DropWhen,
    Fault,
    Sandbox,
    SandboxTransport,
)

from .conftest import CHARGE_PATH, PROTOCOL_HEADERS, STATUS_PATH, charge_headers

SLUG, USER = DEMO_PROVIDER_SLUG, DEMO_USERNAME
BODY = {"amount_tokens": 100, "model": "gpt-4"}


def _transport_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "knai-sandbox-transport"]


def test_sync_transport_runs_many_requests_on_one_loop_thread_and_stops_it_on_close(
    sandbox: Sandbox,
) -> None:
    before = len(_transport_threads())
    with httpx.Client(base_url=sandbox.url, transport=sandbox.transport()) as client:
        for _ in range(20):
            response = client.get(
                STATUS_PATH, params={"provider_username": USER}, headers=PROTOCOL_HEADERS
            )
            assert response.status_code == 200
        assert len(_transport_threads()) == before + 1
    assert len(_transport_threads()) == before


def test_sync_transport_starts_no_thread_until_used_and_refuses_use_after_close(
    sandbox: Sandbox,
) -> None:
    before = threading.active_count()
    transport = sandbox.transport()
    assert threading.active_count() == before
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        transport.handle_request(httpx.Request("GET", f"{sandbox.url}{STATUS_PATH}"))


def test_sync_transport_builds_the_asgi_request_faithfully(sandbox: Sandbox, token: str) -> None:
    with httpx.Client(base_url=sandbox.url, transport=sandbox.transport()) as client:
        status = client.get(
            STATUS_PATH, params={"provider_username": "a b/c?&d"}, headers=PROTOCOL_HEADERS
        )
        charged = client.post(CHARGE_PATH, json=BODY, headers=charge_headers(token))

    assert status.json() == {"status": "inactive", "provider_username": "a b/c?&d"}
    assert charged.status_code == 200
    assert charged.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(("drop", "charged"), [("before", 0), ("after", 1)])
def test_sync_transport_turns_a_dropped_connection_into_remote_protocol_error(
    sandbox: Sandbox, token: str, drop: DropWhen, charged: int
) -> None:
    sandbox.admin.inject_fault("charge", drop=drop)
    with (
        httpx.Client(base_url=sandbox.url, transport=sandbox.transport()) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.post(CHARGE_PATH, json=BODY, headers=charge_headers(token))
    assert len(sandbox.ledger.charges(SLUG, USER)) == charged


@pytest.mark.anyio
@pytest.mark.parametrize(("drop", "charged"), [("before", 0), ("after", 1)])
async def test_async_transport_turns_a_dropped_connection_into_remote_protocol_error(
    sandbox: Sandbox, token: str, drop: DropWhen, charged: int
) -> None:
    sandbox.ledger.faults.add("charge", Fault(drop=drop))
    async with httpx.AsyncClient(base_url=sandbox.url, transport=sandbox.async_transport()) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(CHARGE_PATH, json=BODY, headers=charge_headers(token))
    assert len(sandbox.ledger.charges(SLUG, USER)) == charged


def test_sync_transport_honours_the_read_timeout_while_the_charge_goes_through(
    sandbox: Sandbox, token: str
) -> None:
    sandbox.ledger.faults.add("charge", Fault(delay=0.2))
    with httpx.Client(base_url=sandbox.url, transport=sandbox.transport()) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(CHARGE_PATH, json=BODY, headers=charge_headers(token), timeout=0.02)
        time.sleep(0.4)
    assert sandbox.ledger.balance(SLUG, USER) == DEMO_BALANCE - 100


@pytest.mark.anyio
async def test_async_transport_honours_the_read_timeout_and_cancels_leftovers_on_close(
    sandbox: Sandbox, token: str
) -> None:
    sandbox.ledger.faults.add("charge", Fault(delay=5))
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=sandbox.url, transport=sandbox.async_transport()) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(CHARGE_PATH, json=BODY, headers=charge_headers(token), timeout=0.05)
    # Closing the client cancelled the charge still sleeping in the sandbox.
    assert time.perf_counter() - started < 2
    assert sandbox.ledger.balance(SLUG, USER) == DEMO_BALANCE


def test_a_sync_transport_is_safe_to_share_between_threads(sandbox: Sandbox, token: str) -> None:
    transport = SandboxTransport(sandbox.app)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                request = httpx.Request(
                    "POST", f"{sandbox.url}{CHARGE_PATH}", json=BODY, headers=charge_headers(token)
                )
                assert transport.handle_request(request).status_code == 200
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transport.close()

    assert errors == []
    assert sandbox.ledger.balance(SLUG, USER) == DEMO_BALANCE - 40 * 100
