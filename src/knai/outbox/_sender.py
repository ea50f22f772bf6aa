"""The sync sender: one thread claims and settles, `concurrency` worker threads deliver.

Its own daemon threads rather than a ThreadPoolExecutor: executors refuse new
work once the interpreter starts shutting down, which is exactly when the
`atexit` drain still needs them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._deliver import Backoff, failed, logger, sent
from ._store import Claim, Outcome, Store

if TYPE_CHECKING:
    from knai import KNAIProvider

__all__ = ["SyncSender"]

# Pause after a store error before the loop tries the store again.
_STORE_ERROR_PAUSE = 0.5


class SyncSender:
    """Delivers a store's pending charges until stopped."""

    def __init__(
        self,
        provider: Callable[[], KNAIProvider],
        store: Store,
        *,
        concurrency: int,
        poll_interval: float,
        backoff: Backoff,
    ) -> None:
        self._provider = provider
        self._store = store
        self._concurrency = concurrency
        self._poll = poll_interval
        self._backoff = backoff
        self._events: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._claims: queue.SimpleQueue[Claim | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def alive(self) -> bool:
        """Whether the claiming thread runs."""
        return bool(self._threads) and self._threads[0].is_alive()

    def start(self) -> None:
        """Start the claiming thread and the workers."""
        self._threads = [threading.Thread(target=self._run, name="knai-outbox-sender", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"knai-outbox-worker-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._events.put(None)

    def stop(self, timeout: float | None) -> bool:
        """Stop claiming, let deliveries in flight settle; True if it ended within `timeout`."""
        self._stopping.set()
        self.wake()
        if self._threads:
            self._threads[0].join(timeout)
        return not self.alive

    def _work(self) -> None:
        while True:
            claim = self._claims.get()
            if claim is None:
                return
            try:
                result = self._provider().charge(
                    claim.session_token,
                    claim.amount_tokens,
                    claim.model,
                    idempotency_key=claim.send_key,
                )
            except Exception as exc:
                outcome = failed(claim, exc, self._backoff)
            else:
                outcome = sent(claim, result)
            self._events.put(outcome)

    def _run(self) -> None:
        in_flight = 0
        unsettled: list[Outcome] = []
        try:
            while True:
                free = 0 if self._stopping.is_set() else self._concurrency - in_flight
                if unsettled or free > 0:
                    # One transaction records what came back and claims what is due.
                    claims = self._exchange(unsettled, free)
                    if claims is not None:
                        unsettled = []
                        for claim in claims:
                            self._claims.put(claim)
                            in_flight += 1
                if self._stopping.is_set() and in_flight == 0 and not unsettled:
                    break
                try:
                    event = self._events.get(timeout=self._poll)
                except queue.Empty:
                    continue
                events = [event]
                while True:
                    try:
                        events.append(self._events.get_nowait())
                    except queue.Empty:
                        break
                for item in events:
                    if item is not None:
                        unsettled.append(item)
                        in_flight -= 1
            self._release()
        finally:
            for _ in range(self._concurrency):
                self._claims.put(None)

    def _exchange(self, outcomes: list[Outcome], limit: int) -> list[Claim] | None:
        try:
            return self._store.exchange(outcomes, limit)
        except Exception as exc:
            # The leases keep the rows; the outcomes are retried on the next turn.
            logger.error("outbox: store call failed (%s): %s", type(exc).__name__, exc)
            time.sleep(_STORE_ERROR_PAUSE)
            return None

    def _release(self) -> None:
        try:
            self._store.release()
        except Exception as exc:
            logger.error("outbox: cannot release leases (%s): %s", type(exc).__name__, exc)
