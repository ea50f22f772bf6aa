"""The transport through the public clients, sync and async: the wire, timeouts, bad answers.

Retries, idempotency and `may_have_been_applied` are in test_transport_retries.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

import knai._constants
from knai import AsyncKNAIProvider, KNAIError, KNAIProvider, ResponseValidationError, ServerError
from tests.conftest import API_KEY, SLUG, TOKEN
from tests.support.rogue import Reply, RogueServer
from tests.support.twin import (
    ACTIVE,
    CHARGE,
    CHARGED,
    PENDING,
    STATUS,
    Twin,
    Twins,
    charge,
    reply,
    sent_json,
)

pytestmark = pytest.mark.anyio


# -- the request on the wire -------------------------------------------------------------------


async def test_status_poll_is_the_protocols_get(twin: Twin, api: respx.MockRouter) -> None:
    route = api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    await twin.get_session("user123")
    request = route.calls.last.request
    assert request.method == "GET"
    assert str(request.url) == f"https://api.conx.ai{STATUS}?provider_username=user123"
    assert request.headers["X-Provider-API-Key"] == API_KEY
    assert request.headers["X-Provider-Slug"] == SLUG
    assert request.headers["Content-Type"] == "application/json"
    assert "X-Session-Token" not in request.headers
    assert "Idempotency-Key" not in request.headers
    assert request.content == b""


async def test_charge_is_the_protocols_post_with_a_fresh_uuid_key(
    twin: Twin, api: respx.MockRouter
) -> None:
    route = api.post(CHARGE).mock(return_value=reply(body=CHARGED))
    result = await charge(twin)
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == f"https://api.conx.ai{CHARGE}"
    assert sent_json(request) == {"amount_tokens": 1500, "model": "gpt-4"}
    assert request.headers["X-Provider-API-Key"] == API_KEY
    assert request.headers["X-Provider-Slug"] == SLUG
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Session-Token"] == TOKEN
    key = request.headers["Idempotency-Key"]
    assert str(uuid.UUID(key)) == key
    assert uuid.UUID(key).version == 4
    assert result.meta.idempotency_key == key
    assert result["charge_id"] == "ch_1"


async def test_charge_sends_the_callers_idempotency_key(twin: Twin, api: respx.MockRouter) -> None:
    route = api.post(CHARGE).mock(return_value=reply(body=CHARGED))
    result = await charge(twin, idempotency_key="order-42:line-7")
    assert route.calls.last.request.headers["Idempotency-Key"] == "order-42:line-7"
    assert result.meta.idempotency_key == "order-42:line-7"


@pytest.mark.parametrize("username", ["a b&c?d#e%f", "a+b=c/d;e,f", "josé_ü_名前", "😀 x%20y"])
async def test_username_is_encoded_exactly(
    twin: Twin, api: respx.MockRouter, username: str
) -> None:
    route = api.get(STATUS).mock(return_value=reply(body=PENDING))
    await twin.get_session(username)
    url = route.calls.last.request.url
    assert url.path == STATUS
    query = url.query.decode("ascii")
    assert parse_qsl(query, strict_parsing=True) == [("provider_username", username)]


@pytest.mark.parametrize("base_url", ["https://api.conx.ai/v1", "https://api.conx.ai/v1/"])
async def test_base_url_path_prefix_is_kept(
    twins: Twins, api: respx.MockRouter, base_url: str
) -> None:
    status = api.get("/v1" + STATUS).mock(return_value=reply(body=ACTIVE))
    charged = api.post("/v1" + CHARGE).mock(return_value=reply(body=CHARGED))
    twin = twins.make(base_url=base_url)
    await twin.get_session("user123")
    await charge(twin)
    assert (
        str(status.calls.last.request.url)
        == f"https://api.conx.ai/v1{STATUS}?provider_username=user123"
    )
    assert str(charged.calls.last.request.url) == f"https://api.conx.ai/v1{CHARGE}"


async def test_default_headers_go_with_every_request(twins: Twins, api: respx.MockRouter) -> None:
    status = api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    charged = api.post(CHARGE).mock(return_value=reply(body=CHARGED))
    twin = twins.make(default_headers={"X-Team": "search", "User-Agent": "acme-bot/1.0"})
    await twin.get_session("user123")
    await charge(twin)
    for request in (status.calls.last.request, charged.calls.last.request):
        assert request.headers["X-Team"] == "search"
        assert request.headers["User-Agent"] == "acme-bot/1.0"
        assert request.headers["X-Provider-API-Key"] == API_KEY


@pytest.mark.parametrize("cls", [KNAIProvider, AsyncKNAIProvider])
async def test_one_pool_serves_every_call(cls: type[KNAIProvider | AsyncKNAIProvider]) -> None:
    """Calls, and calls of a with_options copy, reuse one kept-alive connection."""
    with RogueServer(Reply(200, ACTIVE)) as server:
        twin = Twin(cls(API_KEY, SLUG, server.url))
        for _ in range(2):
            await twin.get_session("user123")
            await charge(twin)
        await twin.with_options(max_retries=0, timeout=1.0).get_session("user123")
        await twin.close()
    assert server.count == 5
    assert server.connections == 1


async def test_users_http_client_is_used_and_left_open(twins: Twins, api: respx.MockRouter) -> None:
    route = api.get(STATUS).mock(return_value=reply(body=ACTIVE))
    http = twins.http_client(headers={"X-Proxy-Tag": "edge-1"})
    twin = twins.make(http_client=http)
    await twin.get_session("user123")
    assert route.calls.last.request.headers["X-Proxy-Tag"] == "edge-1"
    await twin.close()
    assert not http.is_closed
    await http.aclose() if isinstance(http, httpx.AsyncClient) else http.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("endpoint", ["get_session", "charge"])
async def test_redirects_are_not_followed(
    twin: Twin, api: respx.MockRouter, status: int, endpoint: str
) -> None:
    elsewhere = api.route(host="evil.example").mock(return_value=reply(body=ACTIVE))
    moved = httpx.Response(status, headers={"Location": "https://evil.example/steal"})
    if endpoint == "charge":
        route = api.post(CHARGE).mock(return_value=moved)
        call = charge(twin)
    else:
        route = api.get(STATUS).mock(return_value=moved)
        call = twin.get_session("user123")
    with pytest.raises(KNAIError) as info:
        await call
    assert type(info.value) is KNAIError
    assert info.value.status_code == status
    assert "not followed" in str(info.value)
    assert route.call_count == 1
    assert not elsewhere.called


# -- timeouts -----------------------------------------------------------------------------------


async def test_timeouts_default_to_30s_read_5s_connect_and_can_be_overridden(
    twins: Twins, api: respx.MockRouter
) -> None:
    seen: list[dict[str, float]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return reply(body=CHARGED if request.method == "POST" else ACTIVE)

    api.get(STATUS).mock(side_effect=record)
    api.post(CHARGE).mock(side_effect=record)
    twin = twins.make()
    await twin.get_session("user123")
    await charge(twin)
    await twin.get_session("user123", timeout=2.0)
    await charge(twin, timeout=2.0)
    await twin.with_options(timeout=httpx.Timeout(9.0, connect=1.0)).get_session("user123")
    await twins.make(timeout=3.0).get_session("user123")
    default = {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    two = dict.fromkeys(default, 2.0)
    assert seen == [
        default,
        default,
        two,
        two,
        {"connect": 1.0, "read": 9.0, "write": 9.0, "pool": 9.0},
        dict.fromkeys(default, 3.0),
    ]


# -- unreadable 2xx answers ---------------------------------------------------------------------

BAD_SESSIONS = {
    "html": b"<html><body>Down for maintenance</body></html>",
    "empty": b"",
    "truncated-json": b'{"status": "act',
    "invalid-utf8": b'{"status": "\xff\xfe"}',
    "json-array": b'[{"status": "active"}]',
    "json-null": b"null",
    "status-not-a-string": b'{"status": 5}',
    "no-status": b'{"session_token": ""}',
    "active-without-token": b'{"status": "active"}',
}


@pytest.mark.parametrize("name", BAD_SESSIONS)
async def test_unreadable_session_raises_response_validation_error_with_the_body(
    twin: Twin, api: respx.MockRouter, name: str
) -> None:
    """Never a KeyError, a json or a pydantic error: one documented exception, not retried."""
    route = api.get(STATUS).mock(return_value=reply(200, BAD_SESSIONS[name]))
    with pytest.raises(ResponseValidationError) as info:
        await twin.get_session("user123")
    assert info.value.status_code == 200
    assert info.value.raw_body == BAD_SESSIONS[name]
    assert route.call_count == 1


async def test_raw_body_is_truncated_to_64_kib(twin: Twin, api: respx.MockRouter) -> None:
    page = b"<html>" + b"x" * 200_000
    api.get(STATUS).mock(return_value=reply(200, page))
    with pytest.raises(ResponseValidationError) as info:
        await twin.get_session("user123")
    assert info.value.raw_body == page[: 64 * 1024]


def _endless(twins: Twins, produced: list[int]) -> Iterator[bytes] | AsyncIterator[bytes]:
    """A body far over MAX_RESPONSE_BYTES, produced lazily; counts the chunks pulled."""
    chunk, count = b"x" * 65536, 4 * knai._constants.MAX_RESPONSE_BYTES // 65536

    def sync() -> Iterator[bytes]:
        for _ in range(count):
            produced.append(len(chunk))
            yield chunk

    async def asyncly() -> AsyncIterator[bytes]:
        for piece in sync():
            yield piece

    return asyncly() if twins.is_async else sync()


async def test_oversized_body_is_refused_without_being_buffered(
    twins: Twins, twin: Twin, api: respx.MockRouter
) -> None:
    produced: list[int] = []
    route = api.get(STATUS).mock(
        side_effect=lambda request: httpx.Response(200, content=_endless(twins, produced))
    )
    with pytest.raises(ResponseValidationError, match="exceeds"):
        await twin.get_session("user123")
    assert sum(produced) <= knai._constants.MAX_RESPONSE_BYTES + 2 * 65536
    assert route.call_count == 1


async def test_oversized_body_error_keeps_status_and_the_first_64_kib(
    twins: Twins, twin: Twin, api: respx.MockRouter
) -> None:
    api.get(STATUS).mock(
        side_effect=lambda request: httpx.Response(200, content=_endless(twins, []))
    )
    with pytest.raises(ResponseValidationError) as info:
        await twin.get_session("user123")
    assert info.value.status_code == 200
    assert info.value.raw_body == b"x" * 64 * 1024


@pytest.mark.parametrize(("status", "error"), [(200, ResponseValidationError), (500, ServerError)])
async def test_deeply_nested_json_is_mapped_not_a_recursion_error(
    twin: Twin, api: respx.MockRouter, status: int, error: type[KNAIError]
) -> None:
    api.get(STATUS).mock(return_value=reply(status, b"[" * 100_000))
    with pytest.raises(error):
        await twin.get_session("user123", max_retries=0)
