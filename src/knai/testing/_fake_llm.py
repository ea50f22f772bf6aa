"""A deterministic fake LLM upstream speaking the OpenAI and Anthropic wire APIs.

    POST /v1/chat/completions   OpenAI Chat Completions, streamed or not
    POST /v1/messages           Anthropic Messages, streamed or not

Point the real SDKs at it, in process or over a loopback socket::

    import anthropic, httpx2, openai

    fake = FakeLLM(reply_words=5)
    client = openai.OpenAI(
        api_key="unused", base_url=fake.base_url,
        http_client=httpx2.Client(transport=fake.httpx2_transport()),  # httpx: fake.transport()
    )
    with fake.serve() as running:
        anthropic.Anthropic(api_key="unused", base_url=running.url)

The reply and its token counts are a function of the request (the rule is in
``_fake_llm_wire``). Any API key is accepted. In process, a streamed answer is
handed over whole once produced; over loopback it is sent event by event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._json import JSONValue
from ._app import dropping_connection
from ._fake_llm_wire import (
    Api,
    BadRequestError,
    Plan,
    anthropic_events,
    anthropic_message,
    openai_chunks,
    openai_completion,
    plan,
    sse,
)
from ._server import bind_socket, serve_in_thread
from ._transport import AsyncSandboxTransport, SandboxTransport

if TYPE_CHECKING:
    from ._fake_llm_httpx2 import AsyncHttpx2Transport, Httpx2Transport

__all__ = ["FakeLLM", "FakeLLMRequest", "RunningFakeLLM"]

# A per-request override of `fail_after`, e.g. `extra_headers={FAIL_AFTER_HEADER: "2"}`.
FAIL_AFTER_HEADER = "X-FakeLLM-Fail-After"


@dataclass(frozen=True)
class FakeLLMRequest:
    """A request the fake received: its path and JSON body (no headers: they hold keys)."""

    path: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class RunningFakeLLM:
    """A fake LLM being served: `url` for the Anthropic SDK, `base_url` for OpenAI's."""

    url: str

    @property
    def base_url(self) -> str:
        """The OpenAI SDK's `base_url`: the server's URL with ``/v1``."""
        return f"{self.url}/v1"


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return value


class FakeLLM:
    """A deterministic OpenAI- and Anthropic-compatible upstream for tests and demos.

    Args:
        reply_words: Words (= completion tokens) in each reply, unless the
            request's ``max_tokens`` is smaller (default 8).
        cached_tokens: Prompt tokens reported as read from the prompt cache.
        cache_write_tokens: Prompt tokens reported as written to it (Anthropic).
        fail_after: Cut every streamed answer after this many text deltas:
            the connection drops, with no final usage, ``[DONE]`` or
            ``message_stop`` (default: never). A request's
            ``X-FakeLLM-Fail-After`` header overrides it.

    The options are plain attributes: change them between requests at will.

    Raises:
        TypeError, ValueError: An option is not a (large enough) int.
    """

    url = "http://fakellm.test"
    """Base URL of the in-process transports (any URL works); the Anthropic SDK's `base_url`."""

    def __init__(
        self,
        *,
        reply_words: int = 8,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        fail_after: int | None = None,
    ) -> None:
        self.reply_words: int = _count("reply_words", reply_words, 1)
        self.cached_tokens: int = _count("cached_tokens", cached_tokens, 0)
        self.cache_write_tokens: int = _count("cache_write_tokens", cache_write_tokens, 0)
        self.fail_after: int | None = (
            None if fail_after is None else _count("fail_after", fail_after, 0)
        )
        self.requests: list[FakeLLMRequest] = []
        """Every well-formed request received, oldest first."""
        self._ids = itertools.count(1)
        self.app: Starlette = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
            ]
        )

    @property
    def base_url(self) -> str:
        """The OpenAI SDK's `base_url` for the in-process transports: `url` + ``/v1``."""
        return f"{self.url}/v1"

    def transport(self) -> SandboxTransport:
        """A new sync in-process transport for ``httpx.Client(transport=...)``."""
        return SandboxTransport(self.app)

    def async_transport(self) -> AsyncSandboxTransport:
        """A new async in-process transport for ``httpx.AsyncClient(transport=...)``."""
        return AsyncSandboxTransport(self.app)

    def httpx2_transport(self) -> Httpx2Transport:
        """A sync in-process transport for ``httpx2.Client``, which recent SDKs require."""
        from ._fake_llm_httpx2 import Httpx2Transport

        return Httpx2Transport(self.transport())

    def async_httpx2_transport(self) -> AsyncHttpx2Transport:
        """An async in-process transport for ``httpx2.AsyncClient``."""
        from ._fake_llm_httpx2 import AsyncHttpx2Transport

        return AsyncHttpx2Transport(self.async_transport())

    def serve(
        self, *, host: str = "127.0.0.1", port: int = 0
    ) -> contextlib.AbstractContextManager[RunningFakeLLM]:
        """Serve the fake on ``host:port`` (a free port by default) for a ``with`` block.

        Raises:
            ValueError: ``host`` is not a loopback address.
            OSError: The port is taken.
            RuntimeError: The server failed to start.
        """
        return self._serve(host, port)

    # A plain method in front of the generator, so that help() and the type
    # checkers show a context manager rather than a generator.
    @contextlib.contextmanager
    def _serve(self, host: str, port: int) -> Generator[RunningFakeLLM, None, None]:
        sock = bind_socket(host, port)
        with serve_in_thread(self.app, sock, name="fakellm", label="fake LLM ") as url:
            yield RunningFakeLLM(url=url)

    # -- endpoints ------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        try:
            body, p, cut = await self._read(request, "openai")
        except BadRequestError as exc:
            error = {"message": str(exc), "type": "invalid_request_error", "param": None}
            return JSONResponse({"error": {**error, "code": None}}, status_code=400)
        ident = f"chatcmpl-fake{next(self._ids):06d}"
        if not body.get("stream"):
            return JSONResponse(openai_completion(p, ident))
        options = body.get("stream_options")
        include = isinstance(options, Mapping) and bool(options.get("include_usage"))
        frames = [
            (sse(c), bool(c["choices"] and c["choices"][0]["delta"].get("content")))
            for c in openai_chunks(p, ident, include_usage=include)
        ]
        return _EventStream([*frames, (sse("[DONE]"), False)], cut)

    async def _messages(self, request: Request) -> Response:
        try:
            body, p, cut = await self._read(request, "anthropic")
        except BadRequestError as exc:
            error = {"type": "invalid_request_error", "message": str(exc)}
            return JSONResponse({"type": "error", "error": error}, status_code=400)
        ident = f"msg_fake{next(self._ids):06d}"
        if not body.get("stream"):
            return JSONResponse(anthropic_message(p, ident))
        frames = [
            (sse(data, event), event == "content_block_delta")
            for event, data in anthropic_events(p, ident)
        ]
        return _EventStream(frames, cut)

    async def _read(
        self, request: Request, api: Api
    ) -> tuple[dict[str, JSONValue], Plan, int | None]:
        try:
            decoded: JSONValue = json.loads(await request.body())
        except ValueError:
            raise BadRequestError("the body must be JSON") from None
        if not isinstance(decoded, dict):
            raise BadRequestError("the body must be a JSON object")
        body = decoded
        p = plan(
            body,
            api,
            reply_words=self.reply_words,
            cached_tokens=self.cached_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )
        cut = self.fail_after
        header = request.headers.get(FAIL_AFTER_HEADER)
        if header is not None:
            if not header.isdigit():
                raise BadRequestError(f"{FAIL_AFTER_HEADER}: a non-negative integer is required")
            cut = int(header)
        self.requests.append(FakeLLMRequest(path=request.url.path, body=body))
        return body, p, cut


class _EventStream(Response):
    """Server-sent events, one send per frame; cut after ``cut`` content frames when set."""

    media_type = "text/event-stream"

    def __init__(self, frames: list[tuple[bytes, bool]], cut: int | None) -> None:
        super().__init__(headers={"Cache-Control": "no-cache"})
        self.frames = frames
        self.cut = cut

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        for frame, is_content in self.frames:
            if is_content and self.cut is not None and sent >= self.cut:
                # Leave without finishing: the server drops the connection, as
                # an upstream that fails mid-answer does.
                dropping_connection.set(True)
                return
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            sent += is_content
            await asyncio.sleep(0)  # each event leaves before the next is made
        await send({"type": "http.response.body", "body": b"", "more_body": False})
