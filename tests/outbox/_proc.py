"""Scenarios the process tests run in a fresh interpreter: fork, and interpreter exit.

    python -m tests.outbox._proc fork-sync|fork-async|exit URL DB TOKEN

Exit status 0 means the scenario's own checks held; it prints what it saw.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import warnings

from knai import AsyncKNAIProvider, KNAIProvider
from knai.outbox import AsyncOutbox, Outbox
from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG

_DEADLINE = 20.0


def _fork() -> int:
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process is risky: that is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _wait_sent(outbox: Outbox, key: str) -> bool:
    deadline = time.monotonic() + _DEADLINE
    while time.monotonic() < deadline:
        entry = outbox.get(key)
        if entry is not None and entry.state == "sent":
            return True
        time.sleep(0.02)
    return False


def fork_sync(url: str, db: str, token: str) -> int:
    # A long poll: a charge is only seen by the sender its own process wakes.
    outbox = Outbox(
        lambda: KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, url), db, poll_interval=60
    )
    outbox.start()
    outbox.charge(token, 1, "m", idempotency_key="parent-before")
    if not outbox.drain(_DEADLINE):
        return 2
    pid = _fork()
    if pid == 0:
        # No drain() here: the child's sender must come back on its own.
        outbox.charge(token, 1, "m", idempotency_key="child")
        os._exit(0 if _wait_sent(outbox, "child") else 3)
    _, status = os.waitpid(pid, 0)
    outbox.charge(token, 1, "m", idempotency_key="parent-after")
    ok = _wait_sent(outbox, "parent-after")
    outbox.close()
    print(f"child={os.waitstatus_to_exitcode(status)} parent={ok}")
    return 0 if ok and os.waitstatus_to_exitcode(status) == 0 else 4


def fork_async(url: str, db: str, token: str) -> int:
    outbox = AsyncOutbox(
        lambda: AsyncKNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, url), db, poll_interval=60
    )

    async def before() -> bool:
        await outbox.start()
        await outbox.charge(token, 1, "m", idempotency_key="parent-before")
        return await outbox.drain(_DEADLINE)

    async def child() -> bool:
        await outbox.charge(token, 1, "m", idempotency_key="child")
        deadline = time.monotonic() + _DEADLINE
        while time.monotonic() < deadline:
            entry = await outbox.get("child")
            if entry is not None and entry.state == "sent":
                return True
            await asyncio.sleep(0.02)
        return False

    if not asyncio.run(before()):
        return 2
    pid = _fork()
    if pid == 0:
        os._exit(0 if asyncio.run(child()) else 3)
    _, status = os.waitpid(pid, 0)
    print(f"child={os.waitstatus_to_exitcode(status)}")
    return os.waitstatus_to_exitcode(status)


def exit_without_stop(url: str, db: str, token: str) -> int:
    provider = KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, url, max_retries=0)
    outbox = Outbox(provider, db, drain_timeout=2.0, poll_interval=0.05)
    outbox.start()
    outbox.charge(token, 1, "m", idempotency_key="at-exit")
    # Returning without stop(): the atexit hook must drain (boundedly) and stop.
    return 0


SCENARIOS = {"fork-sync": fork_sync, "fork-async": fork_async, "exit": exit_without_stop}

if __name__ == "__main__":
    sys.exit(SCENARIOS[sys.argv[1]](*sys.argv[2:5]))
