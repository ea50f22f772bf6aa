"""What does an async charge cost more of at high concurrency? Profiles two levels.

    python benchmarks/profile_async.py [--variant ours] [--low 8] [--high 64]
                                       [--calls 3000] [--top 30]

Against the benchmark's own canned server (in a subprocess), it runs `--calls`
charges through one async client (`--variant`: ours, ours-own-client or httpx,
as in `_variants.ASYNC_FACTORIES`) at `--low` and then at `--high` concurrent
tasks, each under cProfile, and prints client CPU per call without a profiler,
then the functions whose own time per call grows most from low to high. This
is how the cost of httpcore's pool bookkeeping was found (OPTIMISATIONS.md):
run it with `--variant ours-own-client` to see it, and with `--variant ours`
to see the lanes flatten it. cProfile inflates small Python functions: read
its figures as proportions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

import _variants
from _measure import batch
from _server import BenchServer

_WARMUP = 500


async def _run(
    url: str, name: str, level: int, calls: int, profile: cProfile.Profile | None
) -> float:
    """Client CPU µs per call of `calls` charges at `level` tasks (profiled if asked)."""
    variant = _variants.ASYNC_FACTORIES[name](url)
    try:
        await batch(variant, _WARMUP, level)  # opens the connections
        cpu = time.process_time()
        if profile is not None:
            profile.enable()
        await batch(variant, calls, level)
        if profile is not None:
            profile.disable()
        return (time.process_time() - cpu) / calls * 1e6
    finally:
        await variant.close()


def _own_times(profile: cProfile.Profile, calls: int) -> dict[str, tuple[float, int]]:
    """Own (tottime) µs per charge and call count of each function."""
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    own = {}
    for (path, line, function), (_, ncalls, tottime, _, _) in stats.items():
        short = path.split("site-packages/")[-1] if path != "~" else "builtin"
        own[f"{short}:{line}({function})"] = (tottime / calls * 1e6, ncalls)
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="ours", choices=list(_variants.ASYNC_FACTORIES))
    parser.add_argument("--low", type=int, default=8)
    parser.add_argument("--high", type=int, default=64)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    if not 1 <= args.low < args.high or args.calls < 1:
        parser.error("need 1 <= --low < --high and --calls >= 1")

    with BenchServer() as server:
        plain = {
            level: asyncio.run(_run(server.url, args.variant, level, args.calls, None))
            for level in (args.low, args.high)
        }
        own = {}
        for level in (args.low, args.high):
            profile = cProfile.Profile()
            asyncio.run(_run(server.url, args.variant, level, args.calls, profile))
            own[level] = _own_times(profile, args.calls)

    print(f"{_variants.ASYNC_LABELS[args.variant]}: client CPU per charge, no profiler")
    for level, cpu in plain.items():
        print(f"  {level:>3} tasks: {cpu:7.0f} µs")
    low, high = own[args.low], own[args.high]
    growth = sorted(
        ((high.get(k, (0.0, 0))[0] - low.get(k, (0.0, 0))[0], k) for k in set(low) | set(high)),
        reverse=True,
    )
    print(f"\nown time per charge that grows most from {args.low} to {args.high} tasks (cProfile)")
    print(f"{'µs/charge':>10}  {'calls ' + str(args.low) + ' -> ' + str(args.high):>22}  function")
    for delta, key in growth[: args.top]:
        calls = f"{low.get(key, (0, 0))[1]} -> {high.get(key, (0, 0))[1]}"
        print(f"{delta:+10.1f}  {calls:>22}  {key}")
    total = sum(v for v, _ in high.values()) - sum(v for v, _ in low.values())
    print(f"\nin all: {total:+.0f} µs of own time per charge under the profiler")


if __name__ == "__main__":
    main()
