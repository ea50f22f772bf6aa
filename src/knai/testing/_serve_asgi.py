"""Serve any ASGI app (the paid-chat example) on a loopback port in a background thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator
from typing import Any

import uvicorn

# The sandbox's own server machinery, shared within knai.testing.
from ._server import SHUTDOWN_GRACE, START_TIMEOUT, UvicornServer, bind_socket, url_of

__all__ = ["serve_asgi"]


@contextlib.contextmanager
def serve_asgi(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Generator[str, None, None]:
    """Serve `app` for a ``with`` block; yields its base URL.

    Raises:
        ValueError: ``host`` is not a loopback address.
        RuntimeError: The server failed to start.
    """
    sock = bind_socket(host, port)
    started = threading.Event()
    config = uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    server = UvicornServer(config, started.set)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="knai-asgi-server", daemon=True
    )
    with sock:
        thread.start()
        try:
            while not started.wait(0.01):
                if not thread.is_alive():
                    raise RuntimeError("the server failed to start")
            yield url_of(sock)
        finally:
            server.should_exit = True
            thread.join(START_TIMEOUT + SHUTDOWN_GRACE)
