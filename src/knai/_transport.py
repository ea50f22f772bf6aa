"""The I/O drivers: each does what the core (`_core`) says, over httpx.

`SyncDriver` and `AsyncDriver` are the SDK's only sync/async twins. Each runs
a core generator: for a `Send` it sends one request and reads its body within
the size cap and time budget (`_response.Body`), for a `Pause` it sleeps.
Every decision (retry, deadline, error mapping, outcome) is the core's.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import weakref
from collections.abc import Callable, Generator
from typing import TypeVar

import httpx

from ._core import Pause, Reply, Send, Step, Steps
from ._lanes import LaneClient
from ._response import Body

__all__ = ["AsyncDriver", "SyncDriver"]

_T = TypeVar("_T")
_CLOSED = "Cannot send a request, as the client has been closed."


class _Driver:
    """Request building both drivers share: pure, done once where it can be."""

    def __init__(
        self,
        http: httpx.Client | httpx.AsyncClient,
        base_url: str,
        headers: dict[str, str],
    ) -> None:
        self.base_url = base_url
        # What httpx's build_request would redo on every call, done once: merge
        # the httpx client's default headers (as they are now) under the SDK's,
        # and parse each endpoint's URL.
        ours = {name.lower() for name in headers}
        self._headers = {k: v for k, v in http.headers.items() if k not in ours} | headers
        self._urls: dict[str, httpx.URL] = {}

    def _prepare(self, step: Send) -> tuple[httpx.Request, Body]:
        call = step.call
        url = self._urls.get(call.path)
        if url is None:
            url = self._urls[call.path] = httpx.URL(self.base_url + call.path)
        request = httpx.Request(
            call.method,
            url,
            params=call.params,
            headers={**self._headers, **call.headers} if call.headers else self._headers,
            content=call.content,
            extensions={"timeout": step.timeout.as_dict()},
        )
        return request, Body(step.until, step.clock)


class SyncDriver(_Driver):
    """Runs core steps over one pooled `httpx.Client`.

    With `remake` (the SDK's own pool), the driver owns its client: it is
    closed when the driver is collected, and a forked child (gunicorn's
    ``--preload``) gets a fresh one on its first request. The parent's pool
    is left alone in the child, never used nor closed there: its sockets are
    the parent's, and a lock a parent thread held at the fork stays held.
    """

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        headers: dict[str, str],
        remake: Callable[[], httpx.Client] | None = None,
    ) -> None:
        super().__init__(http, base_url, headers)
        self.http = http
        self._remake = remake
        self._forked = False
        self._fork_lock = threading.Lock()
        self._finalizer: weakref.finalize[[], SyncDriver] | None = None
        if remake is not None:
            self._own(http)
            _drivers.add(self)

    def _own(self, http: httpx.Client) -> None:
        # A client never closed (0.1.0's README example) closes its pool when
        # collected, so no socket outlives it with a ResourceWarning. Tied to
        # the driver, which the copies from with_options share.
        self._finalizer = weakref.finalize(self, http.close)

    def after_fork(self) -> None:
        # In the child, right after fork: no I/O, and a fresh lock (the old one
        # may have been held by a thread that does not exist here).
        if self._finalizer is not None:
            self._finalizer.detach()
        self._fork_lock = threading.Lock()
        self._forked = True

    def _renew(self) -> None:
        with self._fork_lock:
            if self._forked and self._remake is not None:
                self.http = self._remake()
                self._own(self.http)
                self._forked = False

    def run(self, steps: Generator[Step, Reply, _T]) -> _T:
        """Do what `steps` say until they return; their result, or their error."""
        todo = Steps(steps)
        for step in todo:
            todo.reply = self._exchange(step) if isinstance(step, Send) else self._pause(step)
        return todo.result

    @staticmethod
    def _pause(step: Pause) -> Reply:
        step.policy.sleep(step.seconds)
        return None

    def _exchange(self, step: Send) -> Reply:
        if self._forked:
            self._renew()
        if self.http.is_closed:
            raise RuntimeError(_CLOSED)  # nothing sent: the caller's mistake, said plainly
        request, body = self._prepare(step)
        try:
            response = self.http.send(request, stream=True, follow_redirects=False)
            try:
                for chunk in response.iter_raw():
                    if not body.feed(chunk):
                        break
            except httpx.StreamConsumed:
                body.already_read(response)
            finally:
                response.close()
        except Exception as exc:  # the core maps it: never raw after a charge went out
            return exc
        except BaseException as exc:
            raise _from_here(exc) from exc.__cause__
        return response, body


_drivers: weakref.WeakSet[SyncDriver] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for driver in list(_drivers):
        driver.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class AsyncDriver(_Driver):
    """Runs core steps over the SDK's lanes (`LaneClient`), or a caller's `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> None:
        super().__init__(http, base_url, headers)
        self.http = http
        self._cold = True

    async def run(self, steps: Generator[Step, Reply, _T]) -> _T:
        """Do what `steps` say until they return; their result, or their error."""
        if self._cold:
            await self._warm()
        todo = Steps(steps)
        for step in todo:
            if isinstance(step, Send):
                todo.reply = await self._exchange(step)
            else:
                await step.policy.asleep(step.seconds)
                todo.reply = None
        return todo.result

    async def _warm(self) -> None:
        """Do the first call's one-off, blocking work in a thread, not on the event loop.

        Building the pydantic models, the TLS context and httpcore's pool
        otherwise stall the loop for 100 ms or more on the first charge.
        """
        self._cold = False
        lanes = self.http if isinstance(self.http, LaneClient) else None
        if all(name in sys.modules for name in _WARM if name not in _OPTIONAL) and (
            lanes is None or lanes.ready()
        ):
            if lanes is not None:
                lanes.prepare()  # nothing left that blocks: done here, at once
            return
        await asyncio.to_thread(_warm_up, lanes)

    async def _exchange(self, step: Send) -> Reply:
        if self.http.is_closed:
            raise RuntimeError(_CLOSED)
        request, body = self._prepare(step)
        try:
            response = await self.http.send(request, stream=True, follow_redirects=False)
            try:
                async for chunk in response.aiter_raw():
                    if not body.feed(chunk):
                        break
            except httpx.StreamConsumed:
                body.already_read(response)
            finally:
                await response.aclose()
        except Exception as exc:
            return exc
        except BaseException as exc:  # a cancellation
            raise _from_here(exc) from exc.__cause__
        return response, body


def _from_here(exc: BaseException) -> BaseException:
    """Ctrl-C or a cancellation mid-request, re-raised as is but with no frame below the driver.

    httpcore's and h11's frames hold the request's header event while it is
    written; error trackers record every frame's locals. The exception keeps
    the frames from the driver up.
    """
    exc.__traceback__ = None
    if exc.__context__ is not None:
        exc.__context__.__traceback__ = None
    return exc


_WARM = ("knai._models", "anyio._backends._asyncio", "httpcore._backends.anyio", "sniffio")
# Optional (the speedups extra): httpcore works without it, only slower.
_OPTIONAL = frozenset({"sniffio"})


def _warm_up(lanes: LaneClient | None) -> None:
    # httpcore imports anyio and its asyncio backend on the first connection and
    # lock; knai._models builds the pydantic models. Imported for that effect only.
    for name in _WARM:
        try:
            importlib.import_module(name)
        except ImportError:
            if name not in _OPTIONAL:
                raise

    if lanes is not None:
        lanes.prepare()
