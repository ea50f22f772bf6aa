"""Outbox benchmarks (issue 14): what durability costs, and how fast the sender delivers.

    python benchmarks/bench_outbox.py [--charges 2000] [--rounds 5]
        [--deliveries 3000] [--concurrency 32]

1. `Outbox.charge()` on SQLite (WAL, synchronous=FULL) against a bare
   `sqlite3` INSERT and commit of the same row into the same kind of table
   with the same durability, on the same filesystem, rounds interleaved.
   Target: at most 1.5x. The same pair under synchronous=NORMAL is shown too.
2. `AsyncOutbox`'s sender draining a store of pending charges against the
   benchmark server (benchmarks/_server.py), against `AsyncKNAIProvider.charge`
   called directly by as many tasks as the sender's concurrency. Target: at
   least 0.7x. The sync `Outbox` sender against as many threads is shown too.

Ratios are within one run; the absolute figures depend on the disk's fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _server import BenchServer

from knai import AsyncKNAIProvider, KNAIProvider
from knai.outbox import AsyncOutbox, Outbox, SQLiteStore

HERE = Path(__file__).resolve().parent
API_KEY = "sk_bench_outbox_0000"
SLUG = "bench"
TOKEN = "sess_tok_bench_outbox"  # noqa: S105 - a benchmark server's dummy


def _bare(path: Path, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(
        "CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, send_key TEXT NOT NULL,"
        " session_token TEXT, amount_tokens INTEGER NOT NULL, model TEXT NOT NULL,"
        " state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
        " next_attempt_at REAL NOT NULL)"
    )
    return db


def charge_cost(workdir: Path, charges: int, rounds: int, synchronous: str) -> tuple[float, float]:
    """Microseconds per charge: (outbox charge(), bare insert+commit), blocks interleaved."""
    provider = KNAIProvider(API_KEY, SLUG, "http://127.0.0.1:9")
    block = 50
    outbox_total = bare_total = 0.0
    for r in range(rounds):
        store = SQLiteStore(workdir / f"o-{synchronous}-{r}.db", synchronous=synchronous)  # type: ignore[arg-type]
        outbox = Outbox(provider, store)
        db = _bare(workdir / f"b-{synchronous}-{r}.db", synchronous)
        for start in range(0, charges, block):
            keys = [f"key-{i}" for i in range(start, min(charges, start + block))]
            started = time.perf_counter()
            for key in keys:
                outbox.charge(TOKEN, 1500, "gpt-4", idempotency_key=key)
            outbox_total += time.perf_counter() - started
            started = time.perf_counter()
            for key in keys:
                now = time.time()
                db.execute(
                    "INSERT INTO t VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                    (key, key, TOKEN, 1500, "gpt-4", now, now, now),
                )
            bare_total += time.perf_counter() - started
        outbox.close()
        db.close()
    provider.close()
    n = charges * rounds
    return outbox_total / n * 1e6, bare_total / n * 1e6


def _fill(path: Path, n: int) -> SQLiteStore:
    store = SQLiteStore(path, synchronous="NORMAL")
    for i in range(n):
        store.add(f"key-{i}", TOKEN, 1500, "gpt-4")
    store.close()
    return SQLiteStore(path)


async def _sdk_async(url: str, calls: int, concurrency: int) -> float:
    async with AsyncKNAIProvider(API_KEY, SLUG, url) as provider:
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await provider.charge(TOKEN, 1500, "gpt-4")

        await provider.charge(TOKEN, 1, "gpt-4")  # warm the pool
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - started)


async def _outbox_async(url: str, path: Path, calls: int, concurrency: int) -> float:
    store = _fill(path, calls)
    async with AsyncKNAIProvider(API_KEY, SLUG, url) as provider:
        await provider.charge(TOKEN, 1, "gpt-4")
        outbox = AsyncOutbox(provider, store, concurrency=concurrency)
        started = time.perf_counter()
        assert await outbox.drain(600)
        rate = calls / (time.perf_counter() - started)
        await outbox.aclose()
    return rate


def _sdk_threads(url: str, calls: int, concurrency: int) -> float:
    with KNAIProvider(API_KEY, SLUG, url) as provider:
        provider.charge(TOKEN, 1, "gpt-4")
        remaining = [calls]
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                provider.charge(TOKEN, 1500, "gpt-4")

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return calls / (time.perf_counter() - started)


def _outbox_threads(url: str, path: Path, calls: int, concurrency: int) -> float:
    store = _fill(path, calls)
    with KNAIProvider(API_KEY, SLUG, url) as provider:
        provider.charge(TOKEN, 1, "gpt-4")
        outbox = Outbox(provider, store, concurrency=concurrency)
        started = time.perf_counter()
        assert outbox.drain(600)
        rate = calls / (time.perf_counter() - started)
        outbox.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--charges", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    ok = True
    # On the repository's filesystem, not a tmpfs: fsync must cost what it costs.
    with tempfile.TemporaryDirectory(prefix=".bench-outbox-", dir=HERE) as tmp:
        workdir = Path(tmp)
        print(f"charge() vs bare sqlite3 insert+commit, {args.charges} x {args.rounds} rounds")
        for synchronous in ("FULL", "NORMAL"):
            outbox_us, bare_us = charge_cost(workdir, args.charges, args.rounds, synchronous)
            ratio = outbox_us / bare_us
            target = " (target <= 1.5x)" if synchronous == "FULL" else ""
            print(
                f"  synchronous={synchronous:<6} outbox {outbox_us:8.1f} us  bare {bare_us:8.1f} us"
                f"  ratio {ratio:.2f}x{target}"
            )
            ok &= synchronous != "FULL" or ratio <= 1.5
        c, n = args.concurrency, args.deliveries
        print(
            f"sender throughput vs the SDK's own, {n} charges at concurrency {c},"
            f" median of {args.rounds} alternated rounds"
        )
        with BenchServer() as server:
            # Alternated rounds, medians: the machine's load drifts during a run.
            sdks, senders, sdks_t, senders_t = [], [], [], []
            for r in range(args.rounds):
                sdks.append(asyncio.run(_sdk_async(server.url, n, c)))
                senders.append(asyncio.run(_outbox_async(server.url, workdir / f"a{r}.db", n, c)))
                sdks_t.append(_sdk_threads(server.url, n, c))
                senders_t.append(_outbox_threads(server.url, workdir / f"s{r}.db", n, c))
            sdk, sender = statistics.median(sdks), statistics.median(senders)
            sdk_t, sender_t = statistics.median(sdks_t), statistics.median(senders_t)
            print(
                f"  async  SDK {sdk:8.0f}/s  AsyncOutbox sender {sender:8.0f}/s"
                f"  ratio {sender / sdk:.2f}x (target >= 0.7x)"
            )
            ok &= sender / sdk >= 0.7
            print(
                f"  sync   SDK {sdk_t:8.0f}/s  Outbox sender      {sender_t:8.0f}/s"
                f"  ratio {sender_t / sdk_t:.2f}x"
            )
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
