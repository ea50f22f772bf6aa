"""The SDKs' own stream objects, metered: `openai.Stream`, `anthropic.Stream` and their async twins.

The SDK clients talk to an httpx mock transport that answers with the
fixtures as server-sent events, so what `wrap` sees is exactly what an
application iterating `client.chat.completions.create(stream=True)` sees.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from knai import InsufficientBalanceError
from knai.metering import Price, PriceTable
from knai.testing import SandboxAdmin
from tests.metering import _fixtures as fx
from tests.metering.conftest import SLUG, Flavour, wallet

pytestmark = pytest.mark.anyio

MESSAGES: Any = [{"role": "user", "content": "Hi"}]


def sse(events: list[dict[str, Any]], *, named: bool) -> list[bytes]:
    """Events as SSE frames: Anthropic names each event, OpenAI ends with [DONE]."""
    out = []
    for event in events:
        head = f"event: {event['type']}\n" if named else ""
        out.append(f"{head}data: {json.dumps(event)}\n\n")
    if not named:
        out.append("data: [DONE]\n\n")
    return [frame.encode() for frame in out]


def _http(sdk: Any) -> Any:
    """The httpx the SDK is built on (recent releases use the `httpx2` fork)."""
    return importlib.import_module(sdk.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])


async def paced(frames: list[bytes]) -> AsyncIterator[bytes]:
    """The frames one by one, as a model would produce them."""
    for frame in frames:
        await asyncio.sleep(0.002)
        yield frame


def client(flavour: Flavour, kind: str, frames: list[bytes]) -> Any:
    sdk: Any = anthropic if kind == "anthropic" else openai
    http = _http(sdk)

    def answer(request: Any) -> Any:
        body = paced(frames) if flavour.name == "async" else iter(frames)
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    mock = http.MockTransport(answer)
    options: dict[str, Any] = {"api_key": "sk-test"}
    options["base_url"] = "http://127.0.0.1:9" + ("" if kind == "anthropic" else "/v1")
    if kind == "anthropic":
        cls = anthropic.AsyncAnthropic if flavour.name == "async" else anthropic.Anthropic
    else:
        cls = openai.AsyncOpenAI if flavour.name == "async" else openai.OpenAI
    if flavour.name == "async":
        return cls(**options, http_client=http.AsyncClient(transport=mock))
    return cls(**options, http_client=http.Client(transport=mock))


async def maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def open_stream(flavour: Flavour, kind: str, events: list[dict[str, Any]]) -> Any:
    if kind == "chat":
        chat = client(flavour, kind, sse(events, named=False))
        return await maybe(
            chat.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    if kind == "responses":
        responses = client(flavour, kind, sse(events, named=False))
        return await maybe(responses.responses.create(model="o3", input="Hi", stream=True))
    messages = client(flavour, kind, sse(events, named=True))
    return await maybe(
        messages.messages.create(
            model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES, stream=True
        )
    )


# (kind, fixture, price, step, ledger)
CASES = [
    ("chat", "chat_stream_usage", Price(1, 1), 4, [4, 4, 4, 2060 - 12]),
    ("responses", "response_stream", Price(1, 1), 4, [4, 1700 - 4]),
    # 2009 input at 0.5 and 1 output at 2 at message_start: 1006.5, up to 1007; 40 output in all.
    ("anthropic", "anthropic_stream", Price("0.5", 2), 1000, [1007, 1085 - 1007]),
]


@pytest.mark.parametrize(
    ("kind", "name", "price", "step", "amounts"), CASES, ids=[c[0] for c in CASES]
)
async def test_an_sdk_stream_is_metered_as_its_events_flow(
    flavour: Flavour,
    admin: SandboxAdmin,
    kind: str,
    name: str,
    price: Price,
    step: int,
    amounts: list[int],
) -> None:
    token = wallet(admin, "alice", 100_000)
    stream = await open_stream(flavour, kind, fx.raw(name))
    metered, got = await flavour.stream(
        flavour.meter(PriceTable(default=price)), token, stream, model="m", key="k", step=step
    )
    assert [type(c).__name__ for c in got] == [type(c).__name__ for c in fx.STREAMS[name](name)]
    assert [c.amount_tokens for c in admin.charges(SLUG, "alice")] == amounts
    assert metered.charged == sum(amounts)
    assert metered.exact


def long_events(kind: str, deltas: int) -> list[dict[str, Any]]:
    if kind == "chat":
        chunks = fx.raw("chat_stream_usage")
        return [chunks[0], *[chunks[1]] * deltas, *chunks[-2:]]
    events = fx.raw("anthropic_stream")
    return [events[0], events[6], *[events[7]] * deltas, *events[-3:]]


@pytest.mark.parametrize("kind", ["chat", "anthropic"])
async def test_a_refused_sdk_stream_is_closed(
    flavour: Flavour, admin: SandboxAdmin, kind: str
) -> None:
    """The SDK stream's HTTP response is closed once the wallet refuses."""
    token = wallet(admin, "alice", 15)
    stream = await open_stream(flavour, kind, long_events(kind, 400))
    # Output only (input at 0), 10 per increment: the second is refused.
    meter = flavour.meter(PriceTable(default=Price(0, 1)))
    metered, got = await flavour.stream(meter, token, stream, model="m", key="k", step=10)
    assert isinstance(metered.stopped, InsufficientBalanceError)
    assert stream.response.is_closed
    assert len(got) < 400
    assert [c.amount_tokens for c in admin.charges(SLUG, "alice")] == [10]
    assert metered.charged == 10
