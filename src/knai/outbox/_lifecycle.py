"""Process events every live outbox must hear: fork (restart in the child) and interpreter exit."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["register"]

T = TypeVar("T")

# Each live outbox with its two hooks, called with the outbox. The hooks are
# plain functions, not bound methods, so that this registry holds no strong
# reference to an outbox and an unused one is still collected.
_Hooks = tuple[Callable[[Any], None], Callable[[Any], None]]
_live: weakref.WeakKeyDictionary[Any, _Hooks] = weakref.WeakKeyDictionary()
_installed = False
_install_lock = threading.Lock()


def register(outbox: T, after_fork: Callable[[T], None], at_exit: Callable[[T], None]) -> None:
    """Call ``after_fork(outbox)`` in a forked child and ``at_exit(outbox)`` at
    interpreter exit, for as long as `outbox` lives."""
    global _installed
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_child)
            atexit.register(_exit)
            _installed = True
        _live[outbox] = (after_fork, at_exit)


def _child() -> None:
    global _install_lock
    _install_lock = threading.Lock()
    for outbox, (after_fork, _) in list(_live.items()):
        after_fork(outbox)


def _exit() -> None:
    for outbox, (_, at_exit) in list(_live.items()):
        at_exit(outbox)
