"""The fake LLM's in-process transports for clients built on ``httpx2``.

Recent openai and anthropic SDKs send through ``httpx2`` (the anthropic SDK
refuses an ``httpx`` client outright). These wrap the ``httpx`` in-process
transports: a request is copied over, the answer copied back, and the two
transport errors they raise (a dropped connection, a read timeout) become
their ``httpx2`` namesakes, which is what the SDKs retry and report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import httpx
import httpx2

from ._transport import AsyncSandboxTransport, SandboxTransport

__all__ = ["AsyncHttpx2Transport", "Httpx2Transport"]


def _request(request: httpx2.Request, content: bytes) -> httpx.Request:
    return httpx.Request(
        request.method,
        str(request.url),
        headers=request.headers.raw,
        content=content,
        extensions={"timeout": request.extensions.get("timeout", {})},
    )


def _response(response: httpx.Response, request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        response.status_code,
        headers=response.headers.raw,
        content=response.content,
        request=request,
    )


@contextlib.contextmanager
def _errors(request: httpx2.Request) -> Generator[None, None, None]:
    try:
        yield
    except httpx.ReadTimeout as exc:
        raise httpx2.ReadTimeout(str(exc), request=request) from None
    except httpx.RemoteProtocolError as exc:
        raise httpx2.RemoteProtocolError(str(exc), request=request) from None


class Httpx2Transport(httpx2.BaseTransport):
    """Sync: ``httpx2.Client(transport=fake.httpx2_transport())``."""

    def __init__(self, inner: SandboxTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer `request` in process, as the fake LLM would over a socket."""
        with _errors(request):
            answer = self._inner.handle_request(_request(request, request.read()))
        return _response(answer, request)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._inner.close()


class AsyncHttpx2Transport(httpx2.AsyncBaseTransport):
    """Async: ``httpx2.AsyncClient(transport=fake.async_httpx2_transport())``."""

    def __init__(self, inner: AsyncSandboxTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer `request` in process, as the fake LLM would over a socket."""
        content = await request.aread()
        with _errors(request):
            answer = await self._inner.handle_async_request(_request(request, content))
        return _response(answer, request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()
