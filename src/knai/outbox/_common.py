"""What `Outbox` and `AsyncOutbox` share: arguments, the store, the provider, fork bookkeeping."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from ._deliver import Backoff
from ._lifecycle import register
from ._open import open_store
from ._store import Store, check_charge

__all__ = ["OutboxBase"]

P = TypeVar("P")
T = TypeVar("T")
_ABANDONED: list[object] = []


def _instance(value: object, cls: type[T]) -> T | None:
    # isinstance() against a type variable's class does not narrow the checker's union.
    return value if isinstance(value, cls) else None


def _is_int(value: object) -> bool:
    # Checked at run time: an untyped caller may pass anything (bool is no count).
    return isinstance(value, int) and not isinstance(value, bool)


class OutboxBase(Generic[P]):
    """Configuration shared by both outboxes (not public)."""

    def __init__(
        self,
        provider: P | Callable[[], P],
        store: str | os.PathLike[str] | Store,
        *,
        provider_type: type[P],
        concurrency: int,
        poll_interval: float,
        retry_backoff: tuple[float, float],
        drain_timeout: float,
        open_now: bool = True,
    ) -> None:
        self._given: P | None
        self._factory: Callable[[], P] | None
        given = _instance(provider, provider_type)
        if given is not None:
            self._given = given
            self._factory = None
        elif callable(provider):
            self._given = None
            # Not a `provider_type`, so by the signature a function returning one.
            # mypy narrows it so; pyright cannot take a type variable out of a union.
            self._factory = provider  # pyright: ignore[reportAttributeAccessIssue]
        else:
            raise TypeError(
                f"provider must be a {provider_type.__name__} or a function returning one,"
                f" not {type(provider).__name__}"
            )
        if not _is_int(concurrency) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        if not drain_timeout >= 0:
            raise ValueError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        self._backoff = Backoff(*retry_backoff)
        self._spec = store
        self._store: Store | None = open_store(store) if open_now else None
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.drain_timeout = drain_timeout
        self._made: P | None = None
        self._pid = os.getpid()
        self._restart_after_fork = False
        # Through the type, so that a subclass's overrides are the ones called.
        register(self, type(self)._after_fork, type(self)._at_exit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(store={self._store or self._spec!r})"

    @property
    def store(self) -> Store:
        """The store (opened on first use if the outbox was built with a path or URL)."""
        if self._store is None:
            self._store = open_store(self._spec)
        return self._store

    def _provider(self) -> P:
        if self._given is not None:
            return self._given
        if self._made is None:
            assert self._factory is not None
            self._made = self._factory()
        return self._made

    @staticmethod
    def _checked_key(
        session_token: object, amount_tokens: object, model: object, idempotency_key: object
    ) -> str:
        key = str(uuid.uuid4()) if idempotency_key is None else idempotency_key
        check_charge(session_token, amount_tokens, model, key)
        return str(key)

    def _after_fork(self) -> None:
        raise NotImplementedError

    def _at_exit(self) -> None:
        raise NotImplementedError

    def _forked(self) -> bool:
        """True (once) in a forked child whose parent's sender was running."""
        if self._pid == os.getpid():
            return False
        self._pid = os.getpid()
        restart, self._restart_after_fork = self._restart_after_fork, False
        return restart

    def _fork_reset(self, was_running: bool) -> None:
        if self._store is not None:
            self._store.after_fork()
        # A provider this outbox built holds the parent's sockets: build another,
        # and keep the old one referenced so that no close() touches them.
        if self._made is not None:
            _ABANDONED.append(self._made)
        self._made = None
        self._restart_after_fork = was_running
