"""`Outbox`: durable charges over a `KNAIProvider`, delivered by a background sender thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._common import OutboxBase
from ._entry import OutboxEntry, OutboxStats
from ._sender import SyncSender
from ._store import Store

if TYPE_CHECKING:
    from typing_extensions import Self

    from knai import KNAIProvider

__all__ = ["Outbox"]

# How often drain() looks at the store.
_DRAIN_POLL = 0.02


class Outbox(OutboxBase["KNAIProvider"]):
    """Store charges durably first; a background sender delivers them to the wallet.

    Example::

        from knai.outbox import Outbox

        with Outbox(provider, "charges.db") as outbox:
            entry = outbox.charge(token, 1500, "gpt-4", idempotency_key=request_id)

    Args:
        provider: The `KNAIProvider` to send with, or a function returning one
            (preferred when the process forks: the child builds its own).
        store: A file path (SQLite), a ``postgresql://`` URL, or a store.
        concurrency: Charges delivered at once.
        poll_interval: Seconds between looks at the store for charges other
            processes added or whose pause ran out.
        retry_backoff: ``(base, cap)`` seconds of the pause before a charge
            whose outcome was unknown is delivered again under its key.
        drain_timeout: Seconds `stop()`, ``with`` exit and interpreter exit
            wait for pending charges to be delivered.
    """

    def __init__(
        self,
        provider: KNAIProvider | Callable[[], KNAIProvider],
        store: str | os.PathLike[str] | Store,
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        retry_backoff: tuple[float, float] = (0.5, 60.0),
        drain_timeout: float = 10.0,
    ) -> None:
        from knai import KNAIProvider

        super().__init__(
            provider,
            store,
            provider_type=KNAIProvider,
            concurrency=concurrency,
            poll_interval=poll_interval,
            retry_backoff=retry_backoff,
            drain_timeout=drain_timeout,
        )
        self._lock = threading.Lock()
        self._sender: SyncSender | None = None

    # -- charging ---------------------------------------------------------------

    def charge(
        self,
        session_token: str,
        amount_tokens: int,
        model: str,
        *,
        idempotency_key: str | None = None,
        connection: Any = None,
    ) -> OutboxEntry:
        """Store a charge durably; the sender delivers it.

        Returns once the charge is committed to the store (see the README,
        "Charging when the wallet is down", for what that survives).

        Args:
            session_token: The active session's token (kept until the charge
                is sent).
            amount_tokens: Tokens to charge, an int >= 1.
            model: The model id.
            idempotency_key: The charge's key, sent with every delivery; pass
                your own (e.g. the request id) so that a crash before this
                returns can be replayed safely. Default: a new UUID4.
            connection: PostgreSQL only: a psycopg connection whose open
                transaction the charge joins (it commits with your own rows).

        Returns:
            The `OutboxEntry` (the existing one if this key already holds
            this same charge).

        Raises:
            ValueError: An argument is malformed, or the key holds another charge.
            TypeError: An argument has the wrong type.
            sqlite3.Error, psycopg.Error: The store could not commit it; the
                charge is not stored (charge it again, or inline).
        """
        key = self._checked_key(session_token, amount_tokens, model, idempotency_key)
        self._resume_after_fork()
        entry = self.store.add(key, session_token, amount_tokens, model, connection=connection)
        sender = self._sender
        if sender is not None and connection is None:
            sender.wake()
        return entry

    def retry_dead(self, key: str, *, session_token: str | None = None) -> OutboxEntry:
        """Resend a dead charge, under a key derived from its own (``f"{key}:retry{n}"``).

        Args:
            key: The charge's idempotency key.
            session_token: A new session's token, needed when the refusal
                ended the session (403/410 purge the old token).

        Raises:
            KeyError: No charge has that key.
            ValueError: It is not dead, or has no token to send with.
        """
        self._resume_after_fork()
        entry = self.store.retry_dead(key, session_token)
        if self._sender is not None:
            self._sender.wake()
        return entry

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start the sender; it resumes whatever a crashed process left pending."""
        with self._lock:
            if self._sender is not None and self._sender.alive:
                return
            self._sender = SyncSender(
                self._provider,
                self.store,
                concurrency=self.concurrency,
                poll_interval=self.poll_interval,
                backoff=self._backoff,
            )
            self._sender.start()

    def drain(self, timeout: float | None = None) -> bool:
        """Deliver until nothing is pending (starting the sender if needed).

        Returns True if the store held no pending charge within `timeout` seconds.
        """
        self._resume_after_fork()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.start()
        if self._sender is not None:
            self._sender.wake()
        return self._wait_empty(deadline)

    def _wait_empty(self, deadline: float | None) -> bool:
        while self.store.stats().pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_DRAIN_POLL)
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Drain for up to `timeout` (default `drain_timeout`) seconds, then stop the sender.

        Returns True if nothing was left pending. Charges left pending stay in
        the store, for the next `start()` (here or in another process).
        """
        timeout = self.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is None:
            return self.store.stats().pending == 0
        drained = self._wait_empty(deadline) if sender.alive else False
        sender.stop(max(0.0, deadline - time.monotonic()))
        return drained

    def close(self) -> None:
        """`stop()`, then close the store and any provider built by this outbox."""
        self.stop()
        self.store.close()
        made, self._made = self._made, None
        if made is not None:
            made.close()

    def pending(self) -> list[OutboxEntry]:
        """Charges not yet settled, in flight included, oldest first."""
        self._resume_after_fork()
        return self.store.entries("pending")

    def dead(self) -> list[OutboxEntry]:
        """Charges the wallet refused, oldest first, each with its `error`."""
        self._resume_after_fork()
        return self.store.entries("dead")

    def get(self, key: str) -> OutboxEntry | None:
        """The entry under `key`, or None."""
        self._resume_after_fork()
        return self.store.get(key)

    def stats(self) -> OutboxStats:
        """Counts of pending, sent and dead charges, and the oldest pending one's age."""
        self._resume_after_fork()
        return self.store.stats()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- process events ---------------------------------------------------------

    def _resume_after_fork(self) -> None:
        if self._forked():
            self.start()

    def _after_fork(self) -> None:
        # The parent's threads do not exist here; its lock may be held forever.
        self._lock = threading.Lock()
        was_running = self._sender is not None
        self._sender = None
        self._fork_reset(was_running)

    def _at_exit(self) -> None:
        if self._sender is not None and self._pid == os.getpid():
            self.stop()
