"""httpx transports that hand requests straight to an ASGI app, no socket involved.

They behave like a client talking to a real server where it matters to an SDK:

- a response the app starts but does not finish (a "drop" fault) raises
  ``httpx.RemoteProtocolError``, as a closed connection does;
- the request's read timeout is honoured: past it ``httpx.ReadTimeout`` is
  raised while the app carries on, as a server does not notice a client giving up
  (so a timed-out charge may still be applied: that is what idempotency keys are for);
- an exception inside the app propagates (a sandbox bug should be loud).

``SandboxTransport`` (sync) runs the app on one event loop in one background
thread, started on first use and stopped by ``close()``; any number of caller
threads can share it. ``AsyncSandboxTransport`` runs the app on the caller's
asyncio loop. Work still running at ``close()`` / ``aclose()`` is cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

__all__ = ["AsyncSandboxTransport", "SandboxTransport"]


class SandboxTransport(httpx.BaseTransport):
    """Sync in-process transport: ``httpx.Client(transport=SandboxTransport(app))``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` to the sandbox app and return its response (httpx calls this)."""
        body = request.read()
        loop = self._running_loop()
        future = asyncio.run_coroutine_threadsafe(_exchange(self._app, request, body), loop)
        try:
            return future.result(timeout=_read_timeout(request))
        except concurrent.futures.TimeoutError:
            raise httpx.ReadTimeout("The sandbox did not answer in time", request=request) from None

    def close(self) -> None:
        """Cancel what the app still runs and stop its event-loop thread (httpx calls this)."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the sandbox transport is closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="knai-sandbox-transport", daemon=True
                )
                self._thread.start()
            return self._loop


class AsyncSandboxTransport(httpx.AsyncBaseTransport):
    """Async in-process transport: ``httpx.AsyncClient(transport=AsyncSandboxTransport(app))``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._tasks: set[asyncio.Task[httpx.Response]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` to the sandbox app and return its response (httpx calls this)."""
        body = await request.aread()
        task = asyncio.ensure_future(_exchange(self._app, request, body))
        # The app keeps running if the caller stops waiting (timeout, cancellation).
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        done, _ = await asyncio.wait({task}, timeout=_read_timeout(request))
        if task not in done:
            raise httpx.ReadTimeout("The sandbox did not answer in time", request=request)
        return task.result()

    async def aclose(self) -> None:
        """Cancel requests the app is still handling and wait for them (httpx calls this)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, task: asyncio.Task[httpx.Response]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as forgotten


def _read_timeout(request: httpx.Request) -> float | None:
    timeout: dict[str, float | None] = request.extensions.get("timeout", {})
    return timeout.get("read")


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _scope(request: httpx.Request) -> dict[str, Any]:
    url = request.url
    default_port = 443 if url.scheme == "https" else 80
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?", 1)[0],
        "query_string": url.query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers.raw],
        "client": ("127.0.0.1", 50000),
        "server": (url.host, url.port or default_port),
        "state": {},
    }


async def _exchange(app: ASGIApp, request: httpx.Request, body: bytes) -> httpx.Response:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    finished = False
    complete = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, finished
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished = True
                complete.set()

    try:
        await app(_scope(request), receive, send)
    finally:
        complete.set()  # wake a receive() still waiting for the end
    if status is None:
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )
    if not finished:
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body", request=request
        )
    return httpx.Response(status, headers=headers, content=b"".join(chunks), request=request)
