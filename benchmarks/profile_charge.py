"""Where does a sync charge spend its CPU? Profiles ours against raw httpx.

    python benchmarks/profile_charge.py [--calls 5000] [--top 25] [--no-pyinstrument]

Against the benchmark's own canned server (in a subprocess), it runs `--calls`
charges through `knai.KNAIProvider.charge` and through a raw `httpx.Client`
sending the identical request, each under cProfile, and prints:

0. client CPU per charge of each, without a profiler, as the anchor;
1. own time per call grouped by package (knai, pydantic, tenacity, httpx, ...),
   ours next to raw httpx: the difference is what the SDK adds;
2. the top functions of our charge by own time (tottime);
3. the functions whose own time per call grows most from raw httpx to ours;
4. a pyinstrument call tree of our charge (installed into benchmarks/.vendor on
   first use), which is less distorted by profiling overhead than cProfile.

The two are profiled in interleaved chunks so the machine's noise hits both.
cProfile inflates small Python functions, so read its figures as proportions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import _variants
from _server import BenchServer
from _vendor import optional

_FuncKey = tuple[str, int, str]
_SITE = re.compile(r"site-packages/([^/]+)")


def _package(filename: str) -> str:
    if "/src/knai/" in filename:
        return "knai (ours)"
    match = _SITE.search(filename)
    if match:
        return match[1].removesuffix(".py")
    if filename.startswith("<") or filename == "~":
        return "builtins (C)"
    return "stdlib"


def _profile(
    variants: dict[str, Callable[[], Any]], calls: int, chunks: int = 10
) -> dict[str, pstats.Stats]:
    """cProfile each variant over `calls` calls, in chunks interleaved across variants."""
    profilers = {name: cProfile.Profile() for name in variants}
    for _ in range(chunks):
        for name, call in variants.items():
            profilers[name].enable()
            for _ in range(calls // chunks):
                call()
            profilers[name].disable()
    return {name: pstats.Stats(profiler) for name, profiler in profilers.items()}


def _cpu_per_call(variants: dict[str, Callable[[], Any]], calls: int) -> dict[str, float]:
    """Unprofiled client CPU µs per call: median of 5 interleaved rounds."""
    seen: dict[str, list[float]] = defaultdict(list)
    for _ in range(5):
        for name, call in variants.items():
            start = time.process_time()
            for _ in range(calls // 5):
                call()
            seen[name].append((time.process_time() - start) / (calls // 5) * 1e6)
    return {name: statistics.median(values) for name, values in seen.items()}


def _own_times(stats: pstats.Stats, calls: int) -> dict[_FuncKey, float]:
    """Own time (tottime) per charge, µs, of each function."""
    raw: dict[_FuncKey, Any] = stats.stats  # type: ignore[attr-defined]
    return {key: value[2] / calls * 1e6 for key, value in raw.items()}


def _name(key: _FuncKey) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    short = filename.split("site-packages/")[-1].split("/src/")[-1].split("/lib/python")[-1]
    return f"{short}:{line}({func})"


def _by_package(times: dict[_FuncKey, float]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for key, value in times.items():
        totals[_package(key[0])] += value
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-pyinstrument", action="store_true")
    args = parser.parse_args()

    with BenchServer() as server:
        ours = _variants.ours(server.url)
        raw = _variants.raw_httpx(server.url)
        both = {"ours": ours.call, "raw": raw.call}
        for call in both.values():
            for _ in range(200):
                call()
        cpu = _cpu_per_call(both, args.calls)
        print("\n== client CPU per charge without a profiler (µs) ==")
        print(
            f"ours {cpu['ours']:.0f}, raw httpx {cpu['raw']:.0f}: {cpu['ours'] / cpu['raw']:.2f}x"
        )
        stats = _profile(both, args.calls)
        ours_t = _own_times(stats["ours"], args.calls)
        raw_t = _own_times(stats["raw"], args.calls)

        ours_p, raw_p = _by_package(ours_t), _by_package(raw_t)
        print(f"\n== own time per charge by package (cProfile, µs, {args.calls} calls) ==")
        print(f"{'package':<22}{'ours':>10}{'raw httpx':>12}{'extra':>10}")
        for package in sorted(set(ours_p) | set(raw_p), key=lambda p: -ours_p.get(p, 0)):
            a, b = ours_p.get(package, 0.0), raw_p.get(package, 0.0)
            print(f"{package:<22}{a:>10.1f}{b:>12.1f}{a - b:>+10.1f}")
        total_a, total_b = sum(ours_p.values()), sum(raw_p.values())
        print(f"{'total':<22}{total_a:>10.1f}{total_b:>12.1f}{total_a - total_b:>+10.1f}")

        print(f"\n== our charge: top {args.top} functions by own time (µs per charge) ==")
        for key, value in sorted(ours_t.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{value:>8.1f}  {_name(key)}")

        print("\n== own time that grows most from raw httpx to ours (µs per charge) ==")
        extra = {k: v - raw_t.get(k, 0.0) for k, v in ours_t.items()}
        for key, value in sorted(extra.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{value:>+8.1f}  {_name(key)}")

        if not args.no_pyinstrument:
            pyinstrument = optional("pyinstrument", "pyinstrument")
            if pyinstrument is None:
                print("\n(pyinstrument unavailable: skipped)")
            else:
                profiler = pyinstrument.Profiler(interval=0.0001)
                profiler.start()
                for _ in range(args.calls):
                    ours.call()
                profiler.stop()
                print("\n== pyinstrument: our charge ==")
                print(profiler.output_text(unicode=True, color=False, show_all=False))
        ours.close()
        raw.close()


if __name__ == "__main__":
    main()
