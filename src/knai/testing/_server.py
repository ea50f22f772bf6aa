"""Serve the sandbox wallet over real loopback sockets with uvicorn.

``serve()`` runs it in a background thread for the length of a ``with`` block::

    with serve() as sandbox:
        provider = KNAIProvider("sk_test_...", "demo-provider", base_url=sandbox.url)

``run_forever()`` runs it in the calling thread until SIGINT/SIGTERM (the
``knai sandbox`` command). Neither prints anything nor touches logging
configuration; uvicorn logs to the ``uvicorn.error`` logger as usual. Only
loopback addresses are accepted unless ``allow_remote=True``: the admin API has
no authentication, so whoever reaches the port can mint wallets and read tokens.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import uvicorn

from ._admin import SandboxAdmin
from ._app import create_app, dropping_connection
from ._ledger import Ledger

__all__ = ["RunningSandbox", "run_forever", "serve"]

START_TIMEOUT = 10.0
# Seconds uvicorn waits at shutdown for requests still running (a long delay fault).
SHUTDOWN_GRACE = 1


@dataclass(frozen=True)
class RunningSandbox:
    """A sandbox being served: its base URL, an admin handle on it, and its ledger."""

    url: str
    admin: SandboxAdmin
    ledger: Ledger


class _DeliberateDropFilter(logging.Filter):
    """Silence uvicorn's complaint about a response the sandbox cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not dropping_connection.get()


drop_filter = _DeliberateDropFilter()
"""Added to uvicorn's error logger once a server is configured."""


class UvicornServer(uvicorn.Server):
    """A uvicorn server that calls `on_started` once it listens (sandbox and fake LLM)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def serve(
    ledger: Ledger | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
) -> contextlib.AbstractContextManager[RunningSandbox]:
    """A context manager serving a sandbox over ``ledger`` (a demo one by default).

    ``with serve() as running:`` listens on ``host:port`` (``port=0`` picks a
    free port) and enters once the server accepts connections; on exit the
    server shuts down and its thread is joined.

    Raises:
        ValueError: ``host`` is not a loopback address (unless ``allow_remote``).
        OSError: The port is taken.
        RuntimeError: uvicorn failed to start.
    """
    return _serve(ledger, host=host, port=port, allow_remote=allow_remote)


# A plain function in front of the generator, so that help(serve) and the type
# checkers show a context manager rather than a generator.
@contextlib.contextmanager
def _serve(
    ledger: Ledger | None, *, host: str, port: int, allow_remote: bool
) -> Generator[RunningSandbox, None, None]:
    ledger = ledger if ledger is not None else Ledger(demo=True)
    sock = bind_socket(host, port, allow_remote=allow_remote)
    app = create_app(ledger)
    served = serve_in_thread(app, sock, name="sandbox", label="sandbox ")
    with served as url, SandboxAdmin(url) as admin:
        yield RunningSandbox(url=url, admin=admin, ledger=ledger)


def run_forever(
    ledger: Ledger | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    on_ready: Callable[[str], None] | None = None,
    allow_remote: bool = False,
) -> None:
    """Serve a sandbox in this thread until SIGINT or SIGTERM.

    ``on_ready(url)`` is called once the server accepts connections (to print
    the URL, say). When a signal stops it, uvicorn re-raises that signal after
    a clean shutdown, so Ctrl-C surfaces as ``KeyboardInterrupt``. A
    non-loopback ``host`` needs ``allow_remote=True`` (see ``serve``).
    """
    ledger = ledger if ledger is not None else Ledger(demo=True)
    with bind_socket(host, port, allow_remote=allow_remote) as sock:
        url = url_of(sock)
        config = loopback_config(create_app(ledger))
        server = UvicornServer(config, lambda: on_ready(url) if on_ready else None)
        server.run(sockets=[sock])


def loopback_config(app: Any) -> uvicorn.Config:
    """The uvicorn settings of every server here: h11, no lifespan, no logging setup."""
    if drop_filter not in logging.getLogger("uvicorn.error").filters:
        logging.getLogger("uvicorn.error").addFilter(drop_filter)
    return uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )


@contextlib.contextmanager
def serve_in_thread(
    app: Any, sock: socket.socket, *, name: str, label: str = ""
) -> Generator[str, None, None]:
    """Serve ``app`` on the bound ``sock`` in a daemon thread for a ``with`` block.

    The sandbox, the fake LLM and ``serve_asgi`` all serve this one way. Yields
    the base URL once the server accepts connections; on exit the server stops
    and its thread is joined.

    Raises:
        RuntimeError: The server failed to start.
    """
    started = threading.Event()
    server = UvicornServer(loopback_config(app), started.set)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"knai-{name}-server", daemon=True
    )
    with sock:
        thread.start()
        try:
            while not started.wait(0.01):
                if not thread.is_alive():
                    raise RuntimeError(f"the {label}server failed to start")
            yield url_of(sock)
        finally:
            server.should_exit = True
            thread.join(START_TIMEOUT + SHUTDOWN_GRACE)


def bind_socket(host: str, port: int, *, allow_remote: bool = False) -> socket.socket:
    """A TCP socket bound to `host:port`; ValueError for a remote host unless allowed."""
    family = _family(host, port, allow_remote=allow_remote)
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so,
    # and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _family(host: str, port: int, *, allow_remote: bool) -> socket.AddressFamily:
    if host == "localhost":
        return socket.AF_INET
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return socket.AF_INET6 if address.version == 6 else socket.AF_INET
    if not allow_remote:
        raise ValueError(
            f"the sandbox only listens on loopback addresses, not {host!r}: its admin API has"
            " no authentication; pass allow_remote=True (knai sandbox --allow-remote) to serve"
            " other machines on a trusted network"
        )
    if address is not None:
        return socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]


def url_of(sock: socket.socket) -> str:
    """The base URL of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
