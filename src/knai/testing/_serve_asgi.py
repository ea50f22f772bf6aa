"""Serve any ASGI app (the paid-chat example) on a loopback port in a background thread."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

# The sandbox's own server machinery, shared within knai.testing.
from ._server import bind_socket, serve_in_thread

__all__ = ["serve_asgi"]


@contextlib.contextmanager
def serve_asgi(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Generator[str, None, None]:
    """Serve `app` for a ``with`` block; yields its base URL.

    Raises:
        ValueError: ``host`` is not a loopback address.
        RuntimeError: The server failed to start.
    """
    sock = bind_socket(host, port)
    with serve_in_thread(app, sock, name="asgi") as url:
        yield url
