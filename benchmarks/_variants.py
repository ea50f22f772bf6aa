"""The clients being compared, each reduced to "one charge" against the bench server.

The raw variants send the request our SDK sends: the same method, path, JSON
bytes and headers, copied from a charge our SDK made to the same server (so a
header added to the SDK is added to them too), with a fresh Idempotency-Key per
call; they parse the JSON answer. 0.1.0 sends what it always sent.
`request_identity` lets the runner check, through ``/__last``, that they agree.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

import knai

API_KEY = "sk_bench_provider_key"
SLUG = "bench-provider"
SESSION_TOKEN = "tok_bench_session"  # noqa: S105 (a canned server accepts anything)
AMOUNT = 1500
MODEL = "gpt-4"
CHARGE_PATH = "/charge/authorize"
# Header lines each HTTP library writes for itself.
_TRANSPORT_HEADERS = {"host", "connection", "content-length"}
_sdk_headers: dict[str, dict[str, str]] = {}


def _last_charge(url: str) -> dict[str, str]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/__last")
        return dict(json.loads(connection.getresponse().read())[CHARGE_PATH])
    finally:
        connection.close()


def _header_lines(head: str) -> list[tuple[str, str]]:
    lines = []
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        lines.append((name.strip(), value.strip()))
    return lines


def sdk_headers(url: str) -> dict[str, str]:
    """The headers our KNAIProvider sends with a charge (learned once per server)."""
    if url not in _sdk_headers:
        with knai.KNAIProvider(API_KEY, SLUG, url) as provider:
            provider.charge(SESSION_TOKEN, AMOUNT, MODEL)
        _sdk_headers[url] = {
            name: value
            for name, value in _header_lines(_last_charge(url)["head"])
            if name.lower() not in _TRANSPORT_HEADERS and name.lower() != "idempotency-key"
        }
    return _sdk_headers[url]


def charge_headers(template: dict[str, str]) -> dict[str, str]:
    """Our SDK's charge headers with a fresh Idempotency-Key, as the SDK makes one."""
    return {**template, "Idempotency-Key": str(uuid.uuid4())}


def charge_body() -> bytes:
    return json.dumps({"amount_tokens": AMOUNT, "model": MODEL}, separators=(",", ":")).encode()


@dataclass
class SyncVariant:
    """One way of charging: `call()` makes one charge and returns the parsed JSON."""

    name: str
    label: str
    call: Callable[[], Any]
    close: Callable[[], None]
    # Fewer calls per round for slow variants (0.1.0 opens a connection per call).
    calls_scale: float = 1.0


def ours(url: str) -> SyncVariant:
    provider = knai.KNAIProvider(API_KEY, SLUG, url)

    def call() -> Any:
        return provider.charge(SESSION_TOKEN, AMOUNT, MODEL)

    return SyncVariant("ours", "knai KNAIProvider.charge", call, provider.close)


def raw_httpx(url: str) -> SyncVariant:
    client = httpx.Client()
    target, template = url + CHARGE_PATH, sdk_headers(url)

    def call() -> Any:
        response = client.post(target, content=charge_body(), headers=charge_headers(template))
        if response.status_code != 200:
            raise RuntimeError(f"raw httpx: HTTP {response.status_code}")
        return response.json()

    return SyncVariant("httpx", "raw httpx.Client", call, client.close)


def raw_http_client(url: str) -> SyncVariant:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    template = sdk_headers(url)

    def call() -> Any:
        headers = charge_headers(template)
        connection.request("POST", CHARGE_PATH, body=charge_body(), headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"http.client: HTTP {response.status}")
        return json.loads(body)

    return SyncVariant("http.client", "raw http.client keep-alive", call, connection.close)


def v010(url: str) -> SyncVariant:
    from _vendor import load_knai_010

    provider = load_knai_010().KNAIProvider(API_KEY, SLUG, url)

    def call() -> Any:
        return provider.charge(SESSION_TOKEN, AMOUNT, MODEL)

    return SyncVariant("0.1.0", "knai-provider 0.1.0 charge", call, lambda: None, 0.25)


SYNC_FACTORIES: dict[str, Callable[[str], SyncVariant]] = {
    "ours": ours,
    "httpx": raw_httpx,
    "http.client": raw_http_client,
    "0.1.0": v010,
}


@dataclass
class AsyncVariant:
    """An async client: `call()` makes one charge; `close()` when done."""

    name: str
    call: Callable[[], Awaitable[Any]]
    close: Callable[[], Awaitable[None]]


def async_ours(url: str) -> AsyncVariant:
    provider = knai.AsyncKNAIProvider(API_KEY, SLUG, url)

    async def call() -> Any:
        return await provider.charge(SESSION_TOKEN, AMOUNT, MODEL)

    return AsyncVariant("ours", call, provider.aclose)


def async_ours_own_client(url: str) -> AsyncVariant:
    """Ours over a caller's own httpx.AsyncClient, used as it is: one httpcore pool."""
    own = httpx.AsyncClient()
    provider = knai.AsyncKNAIProvider(API_KEY, SLUG, url, http_client=own)

    async def call() -> Any:
        return await provider.charge(SESSION_TOKEN, AMOUNT, MODEL)

    async def close() -> None:
        await provider.aclose()
        await own.aclose()

    return AsyncVariant("ours-own-client", call, close)


def async_raw_httpx(url: str) -> AsyncVariant:
    client = httpx.AsyncClient()
    target, template = url + CHARGE_PATH, sdk_headers(url)

    async def call() -> Any:
        headers = charge_headers(template)
        response = await client.post(target, content=charge_body(), headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"raw httpx: HTTP {response.status_code}")
        return response.json()

    return AsyncVariant("httpx", call, client.aclose)


ASYNC_FACTORIES: dict[str, Callable[[str], AsyncVariant]] = {
    "ours": async_ours,
    "ours-own-client": async_ours_own_client,
    "httpx": async_raw_httpx,
}
ASYNC_LABELS = {
    "ours": "knai AsyncKNAIProvider",
    "ours-own-client": "knai AsyncKNAIProvider, http_client=your own AsyncClient",
    "httpx": "raw httpx.AsyncClient",
}


def _is_uuid4(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4
    except ValueError:
        return False


def request_identity(head: str, body: str) -> dict[str, Any]:
    """What must be equal between variants: method, path, headers and body."""
    headers = {}
    for name, value in _header_lines(head):
        if name.lower() not in _TRANSPORT_HEADERS:
            headers[name.lower()] = value
    key = headers.get("idempotency-key")
    if key is not None:  # fresh per call: compare its form, not its value
        headers["idempotency-key"] = "<uuid4>" if _is_uuid4(key) else f"<not a uuid4: {key}>"
    return {"request": head.split("\r\n", 1)[0].rsplit(" ", 1)[0], "headers": headers, "body": body}
