"""Memory soak, run in its own process: RSS and open fds as charges pile up.

    python benchmarks/_memory.py URL VARIANT WARMUP CALLS

Charges `CALLS` times in all with one client and prints one JSON line: the
checkpoints (after 1,000 calls, after `WARMUP`, halfway from there, and at the end)
with VmRSS (KiB, from /proc/self/status) and the number of open fds. VARIANT
is a sync variant's name, or ``async:`` and an async one's, which charges from
64 concurrent tasks sharing the client. Nothing else runs in the process, so
nothing else grows its memory.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time

from _measure import batch
from _variants import ASYNC_FACTORIES, SYNC_FACTORIES

ASYNC_PREFIX = "async:"
ASYNC_TASKS = 64


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _checkpoint(done: int) -> dict[str, int]:
    gc_objects = len(gc.get_objects())
    return {"calls": done, "rss_kib": _rss_kib(), "fds": _fds(), "gc_objects": gc_objects}


def _sync_soak(url: str, name: str, marks: list[int]) -> list[dict[str, int]]:
    variant = SYNC_FACTORIES[name](url)
    checkpoints, done = [], 0
    for mark in marks:
        while done < mark:
            variant.call()
            done += 1
        checkpoints.append(_checkpoint(done))
    variant.close()
    return checkpoints


async def _async_soak(url: str, name: str, marks: list[int]) -> list[dict[str, int]]:
    variant = ASYNC_FACTORIES[name](url)
    checkpoints, done = [], 0
    for mark in marks:
        await batch(variant, mark - done, ASYNC_TASKS)
        done = mark
        checkpoints.append(_checkpoint(done))
    await variant.close()
    return checkpoints


def main(url: str, variant_name: str, warmup: int, calls: int) -> None:
    # An early mark too, so a long warm-up's own growth is on record.
    marks = sorted({min(1000, warmup), warmup, warmup + (calls - warmup) // 2, calls})
    started = time.perf_counter()
    if variant_name.startswith(ASYNC_PREFIX):
        name = variant_name.removeprefix(ASYNC_PREFIX)
        checkpoints = asyncio.run(_async_soak(url, name, marks))
    else:
        checkpoints = _sync_soak(url, variant_name, marks)
    elapsed = time.perf_counter() - started
    report = {"variant": variant_name, "warmup": warmup, "checkpoints": checkpoints}
    print(json.dumps({**report, "seconds": elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
