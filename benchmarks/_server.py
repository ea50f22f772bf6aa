"""A loopback HTTP/1.1 keep-alive server with canned answers, run in its own process.

It answers the protocol's two endpoints with small fixed JSON, plus two for the
runner: ``GET /__cpu`` (its own ``time.process_time()``, so the runner can charge
server CPU to each batch of calls) and ``GET /__last`` (the head and body of the
last request per path, so the runner can check that its variants send the same
request). Two implementations, chosen with ``--impl``:

- ``raw``: an ``asyncio.Protocol`` with a minimal parser (the default: several
  times cheaper per request than uvicorn, so the client is always the bottleneck);
- ``uvicorn``: a tiny ASGI app under uvicorn (httptools when installed, else h11).

Run by ``BenchServer``; standalone: ``python benchmarks/_server.py --impl raw``
prints ``PORT <n>`` and serves until SIGTERM, until its parent exits, or until
``--max-seconds`` have passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHARGE_PATH = "/charge/authorize"
STATUS_PATH = "/providers/session/status"
CHARGE_JSON = (
    b'{"charge_id":"ch_1","status":"succeeded","amount_tokens":1500,'
    b'"model":"gpt-4","remaining_balance":1000}'
)
STATUS_JSON = b'{"status":"active","session_token":"tok_x"}'

_MAX_BUFFER = 1 << 20  # a request head or body larger than this is not one of ours
_LAST: dict[bytes, tuple[bytes, bytes]] = {}


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_CANNED = {
    (b"POST", b"/charge/authorize"): _response("200 OK", CHARGE_JSON),
    (b"GET", b"/providers/session/status"): _response("200 OK", STATUS_JSON),
}
_NOT_FOUND = _response("404 Not Found", b'{"error":"not found"}')


def _answer(method: bytes, path: bytes, head: bytes, body: bytes) -> bytes:
    """The response bytes for one request; remembers the request for /__last."""
    route = path.split(b"?", 1)[0]
    canned = _CANNED.get((method, route))
    if canned is not None:
        _LAST[route] = (head, body)  # decoded only when asked for
        return canned
    if route == b"/__cpu":
        return _response("200 OK", json.dumps({"cpu": time.process_time()}).encode())
    if route == b"/__last":
        last = {
            route.decode(): {"head": head.decode("latin-1"), "body": body.decode("latin-1")}
            for route, (head, body) in _LAST.items()
        }
        return _response("200 OK", json.dumps(last).encode())
    return _NOT_FOUND


class _RawHTTP(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; Content-Length bodies only.

    With `latency` > 0 each batch of answers is sent that many seconds late,
    as a remote server would answer (the protocol endpoints only).
    """

    latency = 0.0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self.buffer + data if self.buffer else data
        out = []
        close = False
        protocol = False  # any request but the runner's /__ ones
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            lowered = head.lower()
            length = 0
            at = lowered.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lowered.find(b"\r\n", at + 2)
                length = int(lowered[at + 17 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(buffer) < total:
                break
            method, path, _ = head[: head.find(b"\r\n")].split(b" ", 2)
            out.append(_answer(method, path, head, buffer[end + 4 : total]))
            protocol = protocol or not path.startswith(b"/__")
            buffer = buffer[total:]
            if b"\r\nconnection: close" in lowered:
                close = True
                break
        self.buffer = buffer
        close = close or len(buffer) > _MAX_BUFFER
        if self.latency and protocol:
            asyncio.get_running_loop().call_later(self.latency, self._send, out, close)
        else:
            self._send(out, close)

    def _send(self, out: list[bytes], close: bool) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    head = scope["method"] + " " + scope["path"] + "\r\n"
    head += "\r\n".join(f"{k.decode()}: {v.decode()}" for k, v in scope["headers"])
    raw = _answer(scope["method"].encode(), scope["path"].encode(), head.encode(), body)
    status_line, _, rest = raw.partition(b"\r\n")
    payload = rest.split(b"\r\n\r\n", 1)[1]
    await send(
        {
            "type": "http.response.start",
            "status": int(status_line.split()[1]),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _watch(stop: asyncio.Event, parent: int, max_seconds: float) -> None:
    """Stop when the parent process is gone or the time is up (bounded by design)."""
    deadline = time.monotonic() + max_seconds
    while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    stop.set()


async def _serve_raw(sock: socket.socket, stop: asyncio.Event) -> None:
    server = await asyncio.get_running_loop().create_server(_RawHTTP, sock=sock, backlog=512)
    async with server:
        await stop.wait()


async def _serve_uvicorn(sock: socket.socket, stop: asyncio.Event) -> None:
    import uvicorn

    try:
        import httptools  # noqa: F401

        http_impl = "httptools"
    except ImportError:
        http_impl = "h11"
    config = uvicorn.Config(
        _asgi_app,
        http=http_impl,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=3600,  # clients idle between rounds keep their connections
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await task


async def _main(impl: str, max_seconds: float, latency: float) -> None:
    _RawHTTP.latency = latency
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.ensure_future(_watch(stop, os.getppid(), max_seconds))
    serve = _serve_raw if impl == "raw" else _serve_uvicorn
    await serve(sock, stop)
    await watcher


class BenchServer:
    """The canned server in a subprocess, for a ``with`` block.

    Example:
        with BenchServer() as server:
            url = server.url; server.cpu()
    """

    def __init__(
        self, impl: str = "raw", max_seconds: float = 3600.0, latency_ms: float = 0.0
    ) -> None:
        self.impl = impl
        self.max_seconds = max_seconds
        self.latency_ms = latency_ms
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._control: http.client.HTTPConnection | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BenchServer:
        command = [sys.executable, str(Path(__file__).resolve()), "--impl", self.impl]
        command += ["--max-seconds", str(self.max_seconds), "--latency-ms", str(self.latency_ms)]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 15.0)
        line = self._process.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"benchmark server did not start (said {line!r})")
        self.port = int(line.split()[1])
        self._control = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return self

    def _get(self, path: str) -> Any:
        assert self._control is not None
        try:
            self._control.request("GET", path)
            return json.loads(self._control.getresponse().read())
        except (ConnectionError, http.client.HTTPException):
            self._control.close()  # reconnects on the next request
            self._control.request("GET", path)
            return json.loads(self._control.getresponse().read())

    def cpu(self) -> float:
        """The server process's CPU seconds so far."""
        return float(self._get("/__cpu")["cpu"])

    def last(self) -> dict[str, dict[str, str]]:
        """The head and body of the last request the server saw on each protocol path."""
        return dict(self._get("/__last"))

    def __exit__(self, *exc_info: object) -> None:
        if self._control is not None:
            self._control.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            if self._process.stdout is not None:
                self._process.stdout.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--impl", choices=("raw", "uvicorn"), default="raw")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay each answer (raw)")
    args = parser.parse_args()
    asyncio.run(_main(args.impl, args.max_seconds, args.latency_ms / 1000))
