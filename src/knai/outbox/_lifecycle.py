"""Process events every live outbox must hear: fork (restart in the child) and interpreter exit."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Protocol

__all__ = ["register"]


class _Hooked(Protocol):
    def _after_fork(self) -> None: ...

    def _at_exit(self) -> None: ...


_live: weakref.WeakSet[_Hooked] = weakref.WeakSet()
_installed = False
_install_lock = threading.Lock()


def register(outbox: _Hooked) -> None:
    """Have `outbox` told about forks and interpreter exit for as long as it lives."""
    global _installed
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_child)
            atexit.register(_exit)
            _installed = True
        _live.add(outbox)


def _child() -> None:
    global _install_lock
    _install_lock = threading.Lock()
    for outbox in list(_live):
        outbox._after_fork()


def _exit() -> None:
    for outbox in list(_live):
        outbox._at_exit()
