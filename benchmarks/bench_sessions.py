"""What a session-cache hit costs, sync and async (issue 13's target: at most 5 us).

    python benchmarks/bench_sessions.py [--calls N]

The provider answers through `httpx.MockTransport` (no socket), so the "miss"
row is the client's own cost of one status call: the ratio hit/miss says how
much of that a hit saves. A plain `dict.get` is printed as the floor. Each
figure is the best of 7 rounds of N calls, in microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

import httpx

from knai import AsyncKNAIProvider, KNAIProvider
from knai.sessions import AsyncSessionCache, SessionCache

ACTIVE = {"status": "active", "session_token": "sess_bench_token", "session_id": "ses_1"}
TARGET_US = 5.0
ROUNDS = 7


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=ACTIVE)


def best_us(run: Callable[[int], float], calls: int) -> float:
    """Fastest of ROUNDS rounds, in microseconds per call; `run(n)` returns seconds."""
    return min(run(calls) for _ in range(ROUNDS)) / calls * 1e6


def sync_rows(calls: int) -> dict[str, float]:
    http = httpx.Client(transport=httpx.MockTransport(_answer))
    with KNAIProvider("sk_bench", "bench", http_client=http) as provider:
        cache = SessionCache(provider)
        cache.get("alice")

        def hits(n: int) -> float:
            get = cache.get
            start = time.perf_counter()
            for _ in range(n):
                get("alice")
            return time.perf_counter() - start

        def misses(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                provider.get_session("alice")
            return time.perf_counter() - start

        rows = {"sync hit": best_us(hits, calls), "sync miss": best_us(misses, calls // 50)}
    http.close()
    return rows


def async_rows(calls: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(_answer))
        async with AsyncKNAIProvider("sk_bench", "bench", http_client=http) as provider:
            cache = AsyncSessionCache(provider)
            await cache.get("alice")
            hit_times, miss_times = [], []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                for _ in range(calls):
                    await cache.get("alice")
                hit_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                for _ in range(calls // 50):
                    await provider.get_session("alice")
                miss_times.append(time.perf_counter() - start)
        await http.aclose()
        return {
            "async hit": min(hit_times) / calls * 1e6,
            "async miss": min(miss_times) / (calls // 50) * 1e6,
        }

    return asyncio.run(main())


def dict_floor(calls: int) -> float:
    table = {"alice": ACTIVE}

    def run(n: int) -> float:
        get = table.get
        start = time.perf_counter()
        for _ in range(n):
            get("alice")
        return time.perf_counter() - start

    return best_us(run, calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per round")
    args = parser.parse_args(argv)
    rows = {"dict.get (floor)": dict_floor(args.calls)}
    rows.update(sync_rows(args.calls))
    rows.update(async_rows(args.calls))
    print(f"Session cache, best of {ROUNDS} rounds, Python {sys.version.split()[0]}")
    print(f"{'':<18} {'us/call':>9}")
    for name, us in rows.items():
        print(f"{name:<18} {us:>9.2f}")
    ok = True
    for flavour in ("sync", "async"):
        hit, miss = rows[f"{flavour} hit"], rows[f"{flavour} miss"]
        verdict = "PASS" if hit <= TARGET_US else "FAIL"
        ok = ok and verdict == "PASS"
        print(
            f"{flavour} hit {hit:.2f} us (target <= {TARGET_US:.0f} us): {verdict};"
            f" a hit costs {hit / miss:.1%} of a status call"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
