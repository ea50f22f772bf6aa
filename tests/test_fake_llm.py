"""FakeLLM through the real openai and anthropic SDKs: they parse every answer and its usage.

Each test runs four ways (the `llm` fixture): sync and async SDK clients, over
the in-process transports and over a loopback socket. The expected text and
token counts follow the documented rule: prompt tokens = words of the
messages, reply = the last user message's words cycled to `reply_words`.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

try:
    import httpx2
except ImportError:  # SDK releases from before httpx2 send through httpx
    httpx2 = None

from knai.testing import FakeLLM

pytestmark = pytest.mark.anyio

PROMPT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "tell me a story"},
]
PROMPT_TOKENS = 7  # "You are terse." + "tell me a story"
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    (httpx.TransportError,) if httpx2 is None else (httpx.TransportError, httpx2.TransportError)
)
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "tell me a story"}]}]


def reply_of(words: int, seed: str = "tell me a story") -> str:
    vocabulary = seed.split()
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


def _uses_httpx(default_client: type) -> bool:
    """Whether an SDK sends through `httpx` (older releases) rather than `httpx2`."""
    return issubclass(default_client, (httpx.Client, httpx.AsyncClient))


@dataclass
class Clients:
    """An OpenAI and an Anthropic client of one flavour, both pointed at one FakeLLM."""

    fake: FakeLLM
    is_async: bool
    loopback: bool
    openai: Any
    anthropic: Any

    async def call(self, result: Any) -> Any:
        return await result if self.is_async else result

    async def collect(self, stream: Any) -> list[Any]:
        if self.is_async:
            return [item async for item in stream]
        return list(stream)

    async def chat(self, **options: Any) -> Any:
        options = {"model": "gpt-fake", "messages": PROMPT, **options}
        return await self.call(self.openai.chat.completions.create(**options))

    async def message(self, **options: Any) -> Any:
        options = {"model": "claude-fake", "max_tokens": 1024, "messages": MESSAGES, **options}
        return await self.call(self.anthropic.messages.create(**options))

    async def message_stream(self, **options: Any) -> tuple[str, Any]:
        """The text the SDK's stream helper yields and its accumulated final message."""
        options = {"model": "claude-fake", "max_tokens": 1024, "messages": MESSAGES, **options}
        manager = self.anthropic.messages.stream(**options)
        if self.is_async:
            async with manager as stream:
                text = "".join([piece async for piece in stream.text_stream])
                return text, await stream.get_final_message()
        with manager as stream:
            return "".join(stream.text_stream), stream.get_final_message()


def _clients(fake: FakeLLM, is_async: bool, url: str | None) -> Clients:
    """SDK clients over loopback `url`, or in process when it is None (no retries)."""
    common: dict[str, Any] = {"api_key": "sk-fake", "max_retries": 0}
    made = []
    for sdk, base_url in ((openai, f"{url or fake.url}/v1"), (anthropic, url or fake.url)):
        options = {**common, "base_url": base_url}
        if url is None:
            if is_async:
                if _uses_httpx(sdk.DefaultAsyncHttpxClient):
                    http: Any = httpx.AsyncClient(transport=fake.async_transport())
                else:
                    http = httpx2.AsyncClient(transport=fake.async_httpx2_transport())
            elif _uses_httpx(sdk.DefaultHttpxClient):
                http = httpx.Client(transport=fake.transport())
            else:
                http = httpx2.Client(transport=fake.httpx2_transport())
            options["http_client"] = http
        cls = getattr(sdk, "AsyncOpenAI" if sdk is openai else "AsyncAnthropic")
        made.append((cls if is_async else getattr(sdk, cls.__name__[5:]))(**options))
    return Clients(fake, is_async, url is not None, made[0], made[1])


@pytest.fixture
def fake() -> FakeLLM:
    return FakeLLM(reply_words=6)


@pytest.fixture(params=["sync-inprocess", "async-inprocess", "sync-loopback", "async-loopback"])
async def llm(request: pytest.FixtureRequest, fake: FakeLLM) -> AsyncIterator[Clients]:
    """SDK clients of one flavour and one way of reaching `fake`; closed afterwards."""
    is_async = request.param.startswith("async")
    loopback = request.param.endswith("loopback")
    with fake.serve() if loopback else contextlib.nullcontext() as running:
        clients = _clients(fake, is_async, running.url if running else None)
        yield clients
        for client in (clients.openai, clients.anthropic):
            await clients.call(client.close())


# -- OpenAI Chat Completions --------------------------------------------------


async def test_openai_completion_is_parsed_with_its_usage(llm: Clients) -> None:
    completion = await llm.chat()
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == reply_of(6)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-fake"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 6, 13)


async def test_openai_stream_with_include_usage_ends_with_a_usage_chunk(llm: Clients) -> None:
    stream = await llm.chat(stream=True, stream_options={"include_usage": True})
    chunks = await llm.collect(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_of(6)
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, 6)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_openai_stream_without_include_usage_carries_none(llm: Clients) -> None:
    chunks = await llm.collect(await llm.chat(stream=True))
    assert all(c.usage is None for c in chunks)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 6


async def test_openai_max_tokens_cuts_the_reply_with_reason_length(llm: Clients) -> None:
    completion = await llm.chat(max_completion_tokens=2)
    assert completion.choices[0].message.content == "tell me"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2


async def test_openai_reports_cached_prompt_tokens(llm: Clients) -> None:
    llm.fake.cached_tokens = 5
    completion = await llm.chat()
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.prompt_tokens_details.cached_tokens == 5


async def test_openai_stream_cut_mid_answer_raises_in_the_sdk(llm: Clients) -> None:
    received: list[str] = []

    async def read() -> None:
        stream = await llm.chat(
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-FakeLLM-Fail-After": "2"},
        )
        if llm.is_async:
            async for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
        else:
            for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises((openai.APIConnectionError, *TRANSPORT_ERRORS)):
        await read()
    # Over loopback the words before the cut arrive; in process the answer comes whole or not.
    assert "".join(received) == ("tell me" if llm.loopback else "")


async def test_openai_bad_request_is_a_400_the_sdk_raises(llm: Clients) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        await llm.chat(messages=[])


# -- Anthropic Messages -------------------------------------------------------


async def test_anthropic_message_is_parsed_with_its_usage(llm: Clients) -> None:
    message = await llm.message(system="Be terse.")
    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].text == reply_of(6)
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4 + 2, 6)


async def test_anthropic_stream_accumulates_to_the_final_message(llm: Clients) -> None:
    text, final = await llm.message_stream()
    assert text == reply_of(6)
    assert final.content[0].text == reply_of(6)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 6)


async def test_anthropic_raw_stream_events_come_in_the_apis_order(llm: Clients) -> None:
    events = await llm.collect(await llm.message(stream=True, max_tokens=2))
    kinds = [event.type for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 4
    assert events[-2].usage.output_tokens == 2
    assert events[-2].delta.stop_reason == "max_tokens"


async def test_anthropic_reports_prompt_cache_reads_and_writes(llm: Clients) -> None:
    llm.fake.cached_tokens, llm.fake.cache_write_tokens = 2, 1
    _, final = await llm.message_stream()
    usage = final.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (2, 1)
    assert usage.input_tokens == 1  # 4 prompt words less those read or written


async def test_anthropic_stream_cut_mid_answer_raises_in_the_sdk(llm: Clients) -> None:
    llm.fake.fail_after = 1
    with pytest.raises((anthropic.APIConnectionError, *TRANSPORT_ERRORS)):
        await llm.message_stream()


async def test_anthropic_stream_cut_delivers_the_deltas_before_it(llm: Clients) -> None:
    received: list[str] = []

    async def read() -> None:
        stream = await llm.message(stream=True, extra_headers={"X-FakeLLM-Fail-After": "3"})
        if llm.is_async:
            async for event in stream:
                received.append(event.type)
        else:
            for event in stream:
                received.append(event.type)

    with pytest.raises((anthropic.APIConnectionError, *TRANSPORT_ERRORS)):
        await read()
    # The SDK drops the ping; in process the answer comes whole or not at all.
    expected = ["message_start", "content_block_start", *["content_block_delta"] * 3]
    assert received == (expected if llm.loopback else [])


async def test_anthropic_bad_request_is_a_400_the_sdk_raises(llm: Clients) -> None:
    with pytest.raises(anthropic.BadRequestError, match="model"):
        await llm.message(model="")


# -- the fake itself ----------------------------------------------------------


async def test_requests_are_recorded_without_headers(llm: Clients) -> None:
    await llm.chat()
    await llm.message()
    assert [r.path for r in llm.fake.requests] == ["/v1/chat/completions", "/v1/messages"]
    assert llm.fake.requests[0].body["messages"] == PROMPT
    assert "sk-fake" not in repr(llm.fake.requests)


@pytest.mark.parametrize(
    ("path", "content", "headers", "error"),
    [
        ("/v1/chat/completions", b"{not json", {}, {"type": "invalid_request_error"}),
        ("/v1/messages", b"[1, 2]", {}, {"type": "invalid_request_error"}),
        ("/v1/chat/completions", None, {"X-FakeLLM-Fail-After": "soon"}, {"code": None}),
    ],
)
def test_malformed_requests_get_a_400_in_the_apis_error_shape(
    path: str, content: bytes | None, headers: dict[str, str], error: dict[str, Any]
) -> None:
    fake = FakeLLM()
    body = {"model": "m", "messages": PROMPT}
    with httpx.Client(transport=fake.transport(), base_url=fake.url) as client:
        if content is None:
            answer = client.post(path, json=body, headers=headers)
        else:
            answer = client.post(path, content=content, headers=headers)
    assert answer.status_code == 400
    assert error.items() <= answer.json()["error"].items()
    assert fake.requests == []


def test_same_request_same_answer() -> None:
    fake = FakeLLM()
    with httpx.Client(transport=fake.transport(), base_url=fake.url) as client:
        body = {"model": "m", "messages": PROMPT}
        first, second = (client.post("/v1/chat/completions", json=body).json() for _ in range(2))
    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]
    assert first["choices"][0]["message"]["content"] == reply_of(8)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("reply_words", 0, ValueError),
        ("cached_tokens", -1, ValueError),
        ("fail_after", 1.5, TypeError),
        ("cache_write_tokens", True, TypeError),
    ],
)
def test_bad_options_raise_naming_the_argument(
    option: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):
        FakeLLM(**{option: value})


def test_serve_refuses_a_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"), FakeLLM().serve(host="192.0.2.1"):
        pass


def test_import_knai_testing_does_not_load_the_fake() -> None:
    code = "import sys, knai.testing; print('knai.testing._fake_llm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(httpx2 is None, reason="the README example uses httpx2")
def test_readme_example_runs() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Testing your integration\n", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "FakeLLM" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["reply"].choices[0].message.content == "hello there hello there hello"
    namespace["client"].close()
