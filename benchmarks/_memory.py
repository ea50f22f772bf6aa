"""Memory soak, run in its own process: RSS and open fds as sync charges pile up.

    python benchmarks/_memory.py URL VARIANT WARMUP CALLS

Charges `CALLS` times in all with one sync client and prints one JSON line: the
checkpoints (after `WARMUP` calls, then at a quarter, half and all of them)
with VmRSS (KiB, from /proc/self/status) and the number of open fds. Nothing
else runs in the process, so nothing else grows its memory.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

from _variants import SYNC_FACTORIES


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main(url: str, variant_name: str, warmup: int, calls: int) -> None:
    variant = SYNC_FACTORIES[variant_name](url)
    marks = sorted({warmup, max(warmup, calls // 4), max(warmup, calls // 2), calls})
    checkpoints = []
    done = 0
    started = time.perf_counter()
    for mark in marks:
        while done < mark:
            variant.call()
            done += 1
        checkpoints.append(
            {
                "calls": done,
                "rss_kib": _rss_kib(),
                "fds": _fds(),
                "gc_objects": len(gc.get_objects()),
            }
        )
    variant.close()
    elapsed = time.perf_counter() - started
    print(json.dumps({"variant": variant_name, "checkpoints": checkpoints, "seconds": elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
