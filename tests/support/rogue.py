"""A loopback HTTP/1.1 server that misbehaves on cue, for the tests of the client's reliability.

The sandbox wallet can answer a status, answer late or drop a connection; this
server does what it cannot: reset a connection, stall forever, send HTML, a
truncated or endless body, a body trickled byte by byte, a gzip bomb, or a
redirect. Each test scripts what it does with the requests it reads, in order::

    with RogueServer(Reset(), Reply(200, {"status": "pending"})) as rogue:
        ...  # the first request is reset, every later one answered "pending"
    assert rogue.count == 2

It records every request it reads (method, target, headers, body), so attempts
are counted on the server's side, and it notices a client hanging up. Stdlib
only, 127.0.0.1 only, and every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "Close",
    "Raw",
    "Reply",
    "Request",
    "Reset",
    "RogueServer",
    "Stall",
    "Stream",
    "closed_port",
    "gzip_bomb",
]

_MAX_HEAD = 8 * 1024 * 1024  # the fuzz tests send very long usernames
_MAX_BODY = 16 * 1024 * 1024
_IDLE_LIMIT = 30.0  # an idle keep-alive connection is closed after this
_POLL = 0.005  # how often a waiting thread looks at its socket and the stop flag


@dataclass(frozen=True)
class Request:
    """One request as it arrived on the socket."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes  # the request line and header block, raw
    connection: int
    at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        """The value of the last header called `name` (any case), or None."""
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[-1] if found else None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> list[tuple[str, str]]:
        """The query string decoded as a form would be (percent escapes and '+')."""
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True, errors="strict")

    def json(self) -> Any:
        return json.loads(self.body)


class Action:
    """What the server does with one request. `perform` returns True to keep the connection."""

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Reply(Action):
    """A complete answer. `body` is bytes, or any other value sent as JSON."""

    status: int = 200
    body: Any = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: str | None = "application/json"
    reason: str = "Whatever"

    def encoded(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        body = self.encoded()
        head = _head(self.status, self.reason, self.content_type, self.headers, len(body))
        try:
            conn.sendall(head + body)
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Stream(Action):
    """A 2xx (or any) answer whose body is sent chunk by chunk, `interval` s apart.

    `length` is the Content-Length announced (None: chunked transfer encoding).
    Sending stops when the client hangs up, the server stops, or `limit` s pass.
    """

    chunks: Callable[[], Iterable[bytes]]
    status: int = 200
    length: int | None = None
    interval: float = 0.0
    headers: Sequence[tuple[str, str]] = ()
    content_type: str | None = "application/json"
    limit: float = 20.0

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        framing = [("Transfer-Encoding", "chunked")] if self.length is None else []
        head = _head(self.status, "OK", self.content_type, [*framing, *self.headers], self.length)
        deadline = time.monotonic() + self.limit
        sent = 0
        conn.settimeout(2.0)
        try:
            conn.sendall(head)
            for chunk in self.chunks():
                if server.stopping or time.monotonic() > deadline:
                    return False
                if self.interval:
                    time.sleep(self.interval)
                data = chunk if self.length is not None else _chunk(chunk)
                conn.sendall(data)
                sent += len(chunk)
                server.add_sent(len(chunk))
            if self.length is None:
                conn.sendall(b"0\r\n\r\n")
        except OSError:
            server.note_hangup()
            return False
        # A body shorter than announced ends with the connection closed.
        return self.length is None or sent == self.length


@dataclass(frozen=True)
class Stall(Action):
    """Read the request, answer nothing for `seconds`, then close; notices a hang-up."""

    seconds: float = 10.0

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        deadline = time.monotonic() + self.seconds
        while not server.stopping and time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], _POLL)
            if readable:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    server.note_hangup()
                    return False
        return False


@dataclass(frozen=True)
class Raw(Action):
    """Send `data` as it is (not necessarily HTTP), then close the connection."""

    data: bytes

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        with contextlib.suppress(OSError):
            conn.sendall(self.data)
        return False


@dataclass(frozen=True)
class Close(Action):
    """Close the connection without answering (a FIN, no status line)."""

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        return False


@dataclass(frozen=True)
class Reset(Action):
    """Reset the connection without answering (a TCP RST)."""

    def perform(self, conn: socket.socket, server: RogueServer) -> bool:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False


Behaviour = Callable[[Request, int], Action]


class RogueServer:
    """A scripted HTTP/1.1 server on 127.0.0.1, in background threads.

    Give it actions (the last one repeats for every later request) or a
    behaviour `f(request, number) -> Action` (number counts from 1). Use it in
    a `with` block: leaving it stops every thread and closes every socket.
    """

    def __init__(self, *actions: Action, behaviour: Behaviour | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._behaviour: Behaviour = behaviour or _scripted(actions or (Reply(200, {}),))
        self._played = 0
        self.requests: list[Request] = []
        self.connections = 0
        self.open_connections = 0
        self.hangups = 0
        self.bytes_sent = 0
        self._accepter = threading.Thread(target=self._accept, name="rogue-accept", daemon=True)

    # -- scripting and records ------------------------------------------------------------

    def play(self, *actions: Action) -> None:
        """Replace the script; the next request gets the first of `actions`."""
        self.behave(_scripted(actions))

    def behave(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviour = behaviour
            self._played = 0

    @property
    def count(self) -> int:
        """Requests read so far."""
        with self._lock:
            return len(self.requests)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def header_values(self, name: str) -> list[str | None]:
        """`name`'s value on every request read, in order."""
        with self._lock:
            return [r.header(name) for r in self.requests]

    def note_hangup(self) -> None:
        with self._lock:
            self.hangups += 1

    def add_sent(self, size: int) -> None:
        with self._lock:
            self.bytes_sent += size

    def wait_until(self, condition: Callable[[], bool], timeout: float = 3.0) -> bool:
        """Poll `condition` until it holds or `timeout` s pass; returns its last value."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL)
        return True

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> RogueServer:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._accepter.is_alive():
            self._accepter.join(5)
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    # -- the server -----------------------------------------------------------------------

    def _accept(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            number += 1
            with self._lock:
                self.connections += 1
                self.open_connections += 1
            thread = threading.Thread(
                target=self._serve, args=(conn, number), name=f"rogue-{number}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = bytearray()
        try:
            with conn:
                while True:
                    request = self._read(conn, buffer, number)
                    if request is None:
                        return
                    with self._lock:
                        self.requests.append(request)
                        self._played += 1
                        played, behaviour = self._played, self._behaviour
                    action = behaviour(request, played)
                    conn.settimeout(None)
                    if not action.perform(conn, self):
                        return
        finally:
            with self._lock:
                self.open_connections -= 1

    def _read(self, conn: socket.socket, buffer: bytearray, number: int) -> Request | None:
        conn.settimeout(_POLL)
        idle_since = time.monotonic()
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > _MAX_HEAD or not self._fill(conn, buffer, idle_since):
                return None  # the client closed the connection (or it idled too long)
        end = buffer.index(b"\r\n\r\n") + 4
        head = bytes(buffer[:end])
        del buffer[:end]
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t")))
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        length = min(length, _MAX_BODY)
        while len(buffer) < length:
            if not self._fill(conn, buffer, time.monotonic()):
                return None
        body = bytes(buffer[:length])
        del buffer[:length]
        return Request(method, target, headers, body, head, number)

    def _fill(self, conn: socket.socket, buffer: bytearray, idle_since: float) -> bool:
        """Read what is there into `buffer`; False on EOF, a stop or a long idle spell."""
        while not self._stop.is_set():
            if time.monotonic() - idle_since > _IDLE_LIMIT:
                return False
            try:
                data = conn.recv(1024 * 1024)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not data:
                return False
            buffer += data
            return True
        return False


def _scripted(actions: Sequence[Action]) -> Behaviour:
    script = list(actions)

    def behaviour(request: Request, number: int) -> Action:
        return script[min(number, len(script)) - 1]

    return behaviour


def _head(
    status: int,
    reason: str,
    content_type: str | None,
    headers: Iterable[tuple[str, str]],
    length: int | None,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@functools.lru_cache(maxsize=2)
def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes, gzip-compressed (about a thousandth of the size)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    parts.append(packer.compress(bytes(size % len(block))))
    parts.append(packer.flush())
    return b"".join(parts)
