"""Scripted failures for the sandbox: what the next requests to an endpoint suffer.

A fault makes the sandbox answer a given status (with an optional ``Retry-After``),
answer late (``delay`` seconds, then as usual), or drop the connection ``"before"``
the charge is applied (nothing happens) or ``"after"`` (the charge and its
idempotency record are kept, the client gets no answer). Faults wait in a FIFO
queue per endpoint; the head fault serves its ``times`` requests, then the next
one takes over. Stdlib only: the admin client shares these types.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Endpoint = Literal["status", "charge"]
"""The protocol endpoints a fault can target: session status and charge."""
DropWhen = Literal["before", "after"]
"""When a dropping fault cuts the connection: before or after the request is applied."""

ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)
DROP_WHEN: tuple[DropWhen, ...] = get_args(DropWhen)


@dataclass(frozen=True)
class Fault:
    """One scripted failure; ``delay`` combines with ``status``, ``drop`` or neither.

    Raises ``ValueError`` when the combination makes no sense (``status`` with
    ``drop``, nothing at all, a status outside 200-599, a negative delay).
    ``body`` is the JSON object to answer with ``status``, or a string sent as
    plain text (to test clients on non-JSON error bodies).
    """

    status: int | None = None
    retry_after: str | None = None
    body: Mapping[str, Any] | str | None = None
    delay: float = 0.0
    drop: DropWhen | None = None

    def __post_init__(self) -> None:
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int)  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise ValueError("status must be an integer")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError("status must be between 200 and 599")
        if self.drop is not None and self.drop not in DROP_WHEN:
            raise ValueError('drop must be "before" or "after"')
        if self.status is not None and self.drop is not None:
            raise ValueError("a fault either answers a status or drops the connection, not both")
        if isinstance(self.delay, bool) or not isinstance(self.delay, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError("delay must be a number of seconds")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError("delay must be a finite number of seconds >= 0")
        if self.status is None and self.drop is None and self.delay == 0:
            raise ValueError("a fault needs a status, a delay or a drop")
        if self.retry_after is not None and (
            not isinstance(self.retry_after, str) or not self.retry_after  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise ValueError("retry_after must be a non-empty string")
        if self.body is not None and not isinstance(self.body, Mapping | str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError("body must be a JSON object or a string")
        if (self.retry_after is not None or self.body is not None) and self.status is None:
            raise ValueError("retry_after and body only go with a status")

    def to_json(self) -> dict[str, Any]:
        """The fault as the admin API spells it."""
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "body": self.body,
            "delay": self.delay,
            "drop": self.drop,
        }


@dataclass(frozen=True)
class PendingFault:
    """A queued fault and how many more requests it will serve."""

    endpoint: Endpoint
    remaining: int
    fault: Fault


@dataclass(frozen=True)
class SandboxStats:
    """Requests seen and faults fired per endpoint since the last reset."""

    requests: Mapping[Endpoint, int]
    faults_fired: Mapping[Endpoint, int]


class _Entry:
    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault, remaining: int) -> None:
        self.fault = fault
        self.remaining = remaining


class FaultPlan:
    """Thread-safe fault queues and request counters, one per endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[Endpoint, deque[_Entry]] = {e: deque() for e in ENDPOINTS}
        self._requests: dict[Endpoint, int] = dict.fromkeys(ENDPOINTS, 0)
        self._fired: dict[Endpoint, int] = dict.fromkeys(ENDPOINTS, 0)

    def add(self, endpoint: Endpoint, fault: Fault, *, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests after those already queued."""
        _check_endpoint(endpoint)
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError("times must be a positive integer")
        with self._lock:
            self._queues[endpoint].append(_Entry(fault, times))

    def next(self, endpoint: Endpoint) -> Fault | None:
        """Count one request to ``endpoint`` and return the fault it suffers, if any."""
        with self._lock:
            self._requests[endpoint] += 1
            queue = self._queues[endpoint]
            if not queue:
                return None
            head = queue[0]
            head.remaining -= 1
            if head.remaining == 0:
                queue.popleft()
            self._fired[endpoint] += 1
            return head.fault

    def pending(self) -> list[PendingFault]:
        """Faults still queued, endpoint by endpoint, in firing order."""
        with self._lock:
            return [
                PendingFault(endpoint, entry.remaining, entry.fault)
                for endpoint in ENDPOINTS
                for entry in self._queues[endpoint]
            ]

    def clear(self, endpoint: Endpoint | None = None) -> int:
        """Drop queued faults (of one endpoint, or all); returns how many entries went."""
        if endpoint is not None:
            _check_endpoint(endpoint)
        with self._lock:
            endpoints = ENDPOINTS if endpoint is None else (endpoint,)
            cleared = sum(len(self._queues[e]) for e in endpoints)
            for e in endpoints:
                self._queues[e].clear()
            return cleared

    def stats(self) -> SandboxStats:
        """Requests seen and faults fired per endpoint since the last reset."""
        with self._lock:
            return SandboxStats(dict(self._requests), dict(self._fired))

    def reset(self) -> None:
        """Clear every queue and counter."""
        with self._lock:
            for e in ENDPOINTS:
                self._queues[e].clear()
                self._requests[e] = 0
                self._fired[e] = 0


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(map(repr, ENDPOINTS))}")
