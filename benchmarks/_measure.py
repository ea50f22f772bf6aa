"""The measurements: each returns raw samples; `_report` turns them into figures.

Rounds are interleaved: in round r every variant runs its batch, in an order
rotated by r, so slow drift of a noisy machine hits all variants alike. Ratios
are taken within a round and then medianed.
"""

from __future__ import annotations

import asyncio
import compileall
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _server import BenchServer
from _variants import ASYNC_FACTORIES, AsyncVariant, SyncVariant


@dataclass(frozen=True)
class Sample:
    """One batch of one variant in one round, per call."""

    cpu_us: float  # client process CPU
    wall_us: float
    server_us: float  # server process CPU
    calls: int


def _rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


# -- sync charge --------------------------------------------------------------


def sync_rounds(
    server: BenchServer, variants: list[SyncVariant], rounds: int, calls: int, warmup: int
) -> dict[str, list[Sample]]:
    """`rounds` rounds of `calls` charges per variant (scaled by `calls_scale`)."""
    for variant in variants:
        for _ in range(max(1, int(warmup * variant.calls_scale))):
            variant.call()
    samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for variant in _rotated(variants, r):
            n = max(1, int(calls * variant.calls_scale))
            call = variant.call
            gc.collect()
            server_0 = server.cpu()
            cpu_0, wall_0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                call()
            wall_1, cpu_1 = time.perf_counter(), time.process_time()
            server_1 = server.cpu()
            samples[variant.name].append(
                Sample(
                    (cpu_1 - cpu_0) / n * 1e6,
                    (wall_1 - wall_0) / n * 1e6,
                    (server_1 - server_0) / n * 1e6,
                    n,
                )
            )
        print(f"  sync round {r + 1}/{rounds} done", flush=True)
    return samples


# -- async throughput ---------------------------------------------------------


async def batch(variant: AsyncVariant, calls: int, concurrency: int) -> None:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await variant.call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _async_rounds(
    server: BenchServer, names: list[str], calls: dict[int, int], rounds: int
) -> dict[tuple[str, int], list[Sample]]:
    # One client per (variant, level): all of a level's tasks share that one client.
    clients = {(n, c): ASYNC_FACTORIES[n](server.url) for n in names for c in calls}
    try:
        for (_, level), client in clients.items():
            await batch(client, max(2 * level, calls[level] // 5), level)  # opens the pool
        samples: dict[tuple[str, int], list[Sample]] = {key: [] for key in clients}
        keys = list(clients)
        for r in range(rounds):
            for key in _rotated(keys, r):
                gc.collect()
                server_0 = server.cpu()
                cpu_0, wall_0 = time.process_time(), time.perf_counter()
                n = calls[key[1]]
                await batch(clients[key], n, key[1])
                wall_1, cpu_1 = time.perf_counter(), time.process_time()
                server_1 = server.cpu()
                samples[key].append(
                    Sample(
                        (cpu_1 - cpu_0) / n * 1e6,
                        (wall_1 - wall_0) / n * 1e6,
                        (server_1 - server_0) / n * 1e6,
                        n,
                    )
                )
            print(f"  async round {r + 1}/{rounds} done", flush=True)
        return samples
    finally:
        for client in clients.values():
            await client.close()


def async_rounds(
    server: BenchServer, names: list[str], calls: dict[int, int], rounds: int
) -> dict[tuple[str, int], list[Sample]]:
    """Throughput of each async variant at each concurrency level (calls/s = 1e6 / wall_us).

    `calls` maps each level (concurrent tasks) to the calls per batch at that level.
    """
    return asyncio.run(_async_rounds(server, names, calls, rounds))


# -- memory -------------------------------------------------------------------


def memory(url: str, variant: str, warmup: int, calls: int) -> dict[str, Any]:
    """Run `_memory.py` in a fresh process; its JSON report."""
    script = Path(__file__).with_name("_memory.py")
    command = [sys.executable, str(script), url, variant, str(warmup), str(calls)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- import time --------------------------------------------------------------

IMPORTS = {
    "knai": "import knai",
    "deps": "import httpx, pydantic, tenacity",
    # Not the target, the honest companion to it: `import pydantic` loads its
    # models lazily and so does `import knai`; the first response builds them.
    "knai-models": "import knai; knai.ChargeResult",
    "deps-models": "import httpx, pydantic, tenacity; pydantic.create_model('M', status=str)",
    "python": "pass",
}


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as empty:  # nothing importable from the cwd
        return subprocess.run(
            [sys.executable, *flags, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=empty,
            timeout=60,
        )


def compile_bytecode() -> int:
    """Compile every module the import benchmarks load (PYTHONDONTWRITEBYTECODE may be set)."""
    listing = "import sys, knai, httpx, pydantic, tenacity\n"
    listing += (
        "print('\\n'.join(getattr(m, '__file__', None) or '' for m in list(sys.modules.values())))"
    )
    files = {f for f in _python(listing).stdout.split() if f.endswith(".py")}
    for path in sorted(files):
        compileall.compile_file(path, quiet=2)
    return len(files)


def import_times(runs: int) -> dict[str, list[float]]:
    """Whole-process wall seconds of `python -c <import>`, interleaved across commands."""
    keys = list(IMPORTS)
    for key in keys:
        _python(IMPORTS[key])  # warm the OS file cache
    times: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(runs):
        for key in _rotated(keys, r):
            start = time.perf_counter()
            _python(IMPORTS[key])
            times[key].append(time.perf_counter() - start)
    return times


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_profile(runs: int) -> dict[str, tuple[float, float]]:
    """Median (self µs, cumulative µs) per module of `python -X importtime -c 'import knai'`."""
    seen: dict[str, list[tuple[int, int]]] = {}
    for _ in range(runs):
        for line in _python("import knai", "-X", "importtime").stderr.splitlines():
            match = _IMPORTTIME.match(line)
            if match:
                seen.setdefault(match[4], []).append((int(match[1]), int(match[2])))
    return {
        name: (statistics.median(s for s, _ in v), statistics.median(c for _, c in v))
        for name, v in seen.items()
    }


# -- wait_for_session ---------------------------------------------------------


def session_waits(intervals: list[float], trials: int) -> dict[float, list[float]]:
    """Seconds from a sandbox session turning active to wait_for_session returning."""
    import knai
    from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, Sandbox

    delays: dict[float, list[float]] = {}
    with (
        Sandbox() as sandbox,
        sandbox.serve() as running,
        knai.KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, running.url) as provider,
    ):
        for interval in intervals:
            delays[interval] = []
            for i in range(trials):
                user = f"bench-{interval:g}-{i}"
                running.admin.create_user(DEMO_PROVIDER_SLUG, user, balance=1_000)
                # Activation lands at a different phase of the poll cycle in each trial.
                after = interval * (1.0 + (i + 0.5) / trials)
                info = running.admin.open_session(DEMO_PROVIDER_SLUG, user, activate_after=after)
                session = provider.wait_for_session(
                    user, poll_interval=interval, timeout=after + 10 * interval + 5
                )
                returned = datetime.now(timezone.utc)
                if not session.is_active:
                    raise RuntimeError(f"wait_for_session returned a {session.status} session")
                active = datetime.fromisoformat(info.activates_at.replace("Z", "+00:00"))
                delays[interval].append((returned - active).total_seconds())
            print(f"  wait_for_session poll_interval={interval:g} done", flush=True)
    return delays
