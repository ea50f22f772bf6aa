"""`knai demo`'s story: an end user of a paid chat service, from a 402 to a refunded fault.

Three servers in this process on 127.0.0.1: the sandbox wallet (or the one at
`--base-url`), a FakeLLM upstream, and the example service of
``examples/paid_chat`` (loaded from the checkout). An httpx client plays the
end user; every step prints what they see and what the wallet holds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from .. import AsyncKNAIProvider, KNAIProvider, RetryPolicy
from ..metering import Price, PriceTable
from ._admin import SandboxAdmin
from ._ledger import DEMO_API_KEY, DEMO_PROVIDER_SLUG

__all__ = ["example_builder", "tell"]

_START = 2_500
_LONG = 400  # words: 4,004 wallet tokens at the demo's prices
_PROMPT = [{"role": "user", "content": "tell me a story"}]
# Wallet tokens per model token: 1 per prompt token, 10 per reply token.
_PRICES = PriceTable(default=Price(1, 10))
_EXAMPLE = Path("examples") / "paid_chat" / "app.py"


def example_builder() -> Callable[..., Any] | None:
    """`build_app` of examples/paid_chat/app.py, or None outside a source checkout
    or without what serves it (the sandbox extra: starlette, uvicorn, fastapi)."""
    if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn", "fastapi")):
        return None
    root = Path(__file__).resolve().parents[3]  # src/knai/testing/ -> the checkout
    for path in (root / _EXAMPLE, Path.cwd() / _EXAMPLE):
        if path.is_file():
            spec = importlib.util.spec_from_file_location("knai_demo_paid_chat", path)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            builder: Callable[..., Any] = module.build_app
            return builder
    return None


class _Paced(httpx.AsyncByteStream):
    """The fake answers a whole stream at once; a real LLM takes seconds. One event per ms."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = b""
        async for data in self.inner:
            *events, pending = (pending + data).split(b"\n\n")
            for event in events:
                await asyncio.sleep(0.001)
                yield event + b"\n\n"
        if pending:
            yield pending

    async def aclose(self) -> None:
        await self.inner.aclose()


class PacedTransport(httpx.AsyncHTTPTransport):
    """Hands each streamed upstream body on one SSE event per millisecond (demo and tests)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _Paced(response.stream)
        return response


def _step(number: int, text: str) -> None:
    print(f"\n[{number}] {text}")


def _say(text: str) -> None:
    print(f"    {text}")


class _User:
    """The end user: their API key at the service, and what they see."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=f"{url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def chat(self) -> httpx.Response:
        return self.http.post("/chat/completions", json={"model": "gpt-4o", "messages": _PROMPT})

    def stream(self) -> tuple[str, list[dict[str, Any]]]:
        """The streamed text, printed as it arrives, and any error events."""
        text, errors = "", list[dict[str, Any]]()
        body = {"model": "gpt-4o", "messages": _PROMPT, "stream": True}
        with self.http.stream("POST", "/chat/completions", json=body) as answer:
            event = ""
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and line != "data: [DONE]":
                    data = json.loads(line.removeprefix("data: "))
                    if event == "error":
                        errors.append(data["error"])
                    for choice in data.get("choices", []):
                        text += choice["delta"].get("content") or ""
        return text, errors


def tell(url: str, admin: SandboxAdmin, build_app: Callable[..., Any]) -> int:
    """Walk an end user through the story; 0 when the ledger agrees with every step."""
    from . import FakeLLM
    from ._serve_asgi import serve_asgi

    user = f"demo-{secrets.token_hex(3)}"
    key = f"sk-paid-chat-{secrets.token_hex(8)}"
    admin.create_user(DEMO_PROVIDER_SLUG, user, balance=_START)
    fake = FakeLLM(reply_words=8)
    quick = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)
    wallet = AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, base_url=url, retry=quick)
    with fake.serve() as llm:
        upstream = httpx.AsyncClient(base_url=llm.base_url, transport=PacedTransport())
        with serve_asgi(build_app({key: user}, wallet, upstream, _PRICES)) as service:
            print(f"fake LLM at {llm.base_url}; paid chat service at {service}/v1")
            print(f"end user {user!r}: a wallet of {_START} tokens, an API key at the service")
            return _story(_User(service, key), admin, url, user, fake)


def _balance(admin: SandboxAdmin, user: str) -> int:
    return admin.balance(DEMO_PROVIDER_SLUG, user)


def _story(end_user: _User, admin: SandboxAdmin, url: str, user: str, fake: Any) -> int:
    _step(1, "a chat request before any wallet session")
    answer = end_user.chat()
    detail = answer.json()["detail"]
    _say(f"HTTP {answer.status_code} {detail['reason']}: {detail['hint']}")
    if answer.status_code != 402:
        return 1

    _step(2, "the user opens a session in their wallet (active after 1 s)")
    admin.open_session(DEMO_PROVIDER_SLUG, user, activate_after=1.0)
    with KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, base_url=url) as provider:
        session = provider.wait_for_session(user, poll_interval=0.25, timeout=10)
    _say(f"the wallet reports: {session}")
    started = time.monotonic()
    while (answer := end_user.chat()).status_code == 402 and time.monotonic() - started < 10:
        time.sleep(0.25)  # "no session" is cached for a second: the service spares the wallet
    if answer.status_code != 200:
        _say(f"still HTTP {answer.status_code} after 10 s: {answer.text}")
        return 1
    expected = 0

    _step(
        3, "a paid chat, then a streamed one (1 wallet token per prompt token, 10 per reply token)"
    )
    usage = answer.json()["usage"]
    cost = usage["prompt_tokens"] + 10 * usage["completion_tokens"]
    expected += cost
    _say(f"HTTP {answer.status_code}: {answer.json()['choices'][0]['message']['content']!r}")
    _say(
        f"usage {usage['prompt_tokens']} + {usage['completion_tokens']}; balance now"
        f" {_balance(admin, user)}"
    )
    text, errors = end_user.stream()
    expected += cost
    _say(f"streamed: {text!r}; balance now {_balance(admin, user)}")

    _step(4, f"a long streamed answer ({_LONG} words) the balance cannot cover")
    fake.reply_words = _LONG
    before = _balance(admin, user)
    text, errors = end_user.stream()
    fake.reply_words = 8
    charged = errors[0]["charged"] if errors else -1
    expected += charged
    _say(
        f"received {len(text.split())} of {_LONG} words, then the stream ended with"
        f" event: error {errors[0]['type'] if errors else 'none'!r}"
    )
    _say(
        f"charged {charged} in increments while it flowed (balance {before} ->"
        f" {_balance(admin, user)}); the increment the balance could not cover stopped it"
    )
    if not errors or errors[0]["type"] != "insufficient_balance":
        return 1

    _step(5, "the user tops up 500; the wallet applies the next charge but its answer is lost")
    admin.top_up(DEMO_PROVIDER_SLUG, user, 500)
    count = len(admin.charges(DEMO_PROVIDER_SLUG, user))
    admin.inject_fault("charge", drop="after")
    answer = end_user.chat()
    new = admin.charges(DEMO_PROVIDER_SLUG, user)[count:]
    if answer.status_code != 200:
        _say(f"HTTP {answer.status_code}: {answer.text}")
        return 1
    expected += cost
    _say(
        f"HTTP {answer.status_code}: the service's SDK retried the charge with the same"
        " Idempotency-Key"
    )
    _say(
        f"the wallet holds {len(new)} new charge"
        f" ({', '.join(f'{c.amount_tokens} under key {c.idempotency_key}' for c in new)}):"
        " charged exactly once"
    )

    ledger = sum(c.amount_tokens for c in admin.charges(DEMO_PROVIDER_SLUG, user))
    final = _balance(admin, user)
    consistent = len(new) == 1 and ledger == expected == _START + 500 - final
    print(
        f"\nsummary: {_START} + 500 top-up - {ledger} charged = {final} tokens left;"
        f" ledger agrees: {'yes' if consistent else 'NO'}"
    )
    return 0 if consistent else 1
