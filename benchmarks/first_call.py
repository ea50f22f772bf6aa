"""How long the async client's first charge holds up the event loop (issue 9, item 13).

Each trial is a fresh interpreter (so nothing is warm): it imports knai, then,
inside `asyncio.run`, constructs an `AsyncKNAIProvider` for the benchmark
server, makes its first charge and a second one, and closes it, while a
heartbeat task wakes every millisecond. The longest gap between heartbeats,
minus the millisecond, is the longest single loop step the SDK caused. Also
timed: construction, each charge, and `aclose()`. The https row points the
client at a refused port: what it measures is the first call's setup (the TLS
context among it) up to the failed connect.

    python benchmarks/first_call.py            # 7 trials, medians and worst
    python benchmarks/first_call.py --trials 3

Target: no loop step over 50 ms (20 ms if possible), the first charge included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer

TRIAL = r"""
import asyncio, json, sys, time
t0 = time.perf_counter()
import knai
imported = time.perf_counter() - t0

async def main(url):
    gaps = []
    stop = False
    async def heartbeat():
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last - 0.001)
            last = now
    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.01)
    t = time.perf_counter()
    provider = knai.AsyncKNAIProvider("sk_bench", "bench", url, max_retries=0)
    built = time.perf_counter() - t
    await asyncio.sleep(0.005)
    t = time.perf_counter()
    try:
        await provider.charge("tok_bench", 1, "gpt-4")
    except knai.KNAIError:
        pass
    first = time.perf_counter() - t
    t = time.perf_counter()
    try:
        await provider.charge("tok_bench", 1, "gpt-4")
    except knai.KNAIError:
        pass
    second = time.perf_counter() - t
    t = time.perf_counter()
    await provider.aclose()
    closed = time.perf_counter() - t
    stop = True
    await beat
    return {"import": imported, "construct": built, "first": first, "second": second,
            "aclose": closed, "max_step": max(gaps)}

print(json.dumps(asyncio.run(main(sys.argv[1]))))
"""


def trial(url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", TRIAL, url], check=True, capture_output=True, text=True, timeout=60
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"http (benchmark server)": []}
    with BenchServer() as server:
        for _ in range(args.trials):
            rows["http (benchmark server)"].append(trial(server.url))
    # https: the TLS context is built on the first call; a refused port ends the attempt.
    rows["https (refused port: setup only)"] = [
        trial("https://127.0.0.1:9") for _ in range(args.trials)
    ]
    print(
        "| base URL | max loop step ms (median / worst) | construct ms | first charge ms"
        " | second charge ms | aclose ms |"
    )
    print("|---|---|---|---|---|---|")
    for name, runs in rows.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs) * 1000

        worst = max(r["max_step"] for r in runs) * 1000
        print(
            f"| {name} | {med('max_step'):.1f} / {worst:.1f} | {med('construct'):.2f}"
            f" | {med('first'):.1f} | {med('second'):.2f} | {med('aclose'):.2f} |"
        )
    print(f"\n{args.trials} fresh interpreters each; target: no loop step over 50 ms (20 ms).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
