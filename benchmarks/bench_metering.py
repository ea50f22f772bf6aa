"""knai.metering's CPU cost: what `wrap` adds per chunk, and `usage_of` + `amount` per response.

    python benchmarks/bench_metering.py [--quick]

Targets (issue 12): `wrap` adds at most 2 us of CPU per chunk over iterating
the raw stream, sync and async, when no charge is due; `usage_of` plus
`amount` take at most 10 us per response. Chunks are the real SDK objects
(openai, anthropic: the dev extra) built from tests/metering/fixtures, and
their decoded JSON. Each figure is the best of several rounds (process CPU
time), so other load on the machine inflates it, never deflates it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.metering import _fixtures as fx  # noqa: E402

from knai import AsyncKNAIProvider, KNAIProvider  # noqa: E402
from knai.metering import AsyncMeter, Meter, Price, PriceTable, usage_of  # noqa: E402

QUICK = "--quick" in sys.argv
CHUNKS = 2_000 if QUICK else 20_000
ROUNDS = 5 if QUICK else 9
# A step no stream reaches: no charge falls due, which is what the target is about.
NEVER = 10**15
PRICES = PriceTable(
    {
        "gpt-4o*": Price("2.5", 10, cached_input="1.25"),
        "gpt-4o-mini*": Price("0.15", "0.6", cached_input="0.075"),
        "o3*": Price(2, 8, cached_input="0.5"),
        "text-embedding-3*": Price("0.02", 0),
        "claude-sonnet-4*": Price(3, 15, cached_input="0.3", cache_write="3.75"),
    }
)


def body(name: str, form: str) -> list[Any]:
    """The stream's content-bearing chunks, repeated to CHUNKS (the report left out)."""
    chunks = fx.STREAMS[name](name) if form == "sdk" else fx.raw(name)
    if name == "anthropic_stream":
        chunks = chunks[7:14]
    elif name == "response_stream":
        chunks = chunks[4:11]
    else:
        chunks = chunks[1:13]
    return (chunks * (CHUNKS // len(chunks) + 1))[:CHUNKS]


def best(run: Callable[[], None]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def sync_overhead(meter: Meter, chunks: list[Any]) -> tuple[float, float]:
    def raw() -> None:
        for _chunk in chunks:
            pass

    def wrapped() -> None:
        with meter.stream("tok", model="gpt-4o", key="bench", step=NEVER) as metered:
            for _chunk in metered.wrap(chunks):
                pass

    return best(raw) / len(chunks), best(wrapped) / len(chunks)


async def agen(chunks: list[Any]) -> AsyncIterator[Any]:
    for chunk in chunks:
        yield chunk


def async_overhead(meter: AsyncMeter, chunks: list[Any]) -> tuple[float, float]:
    loop = asyncio.new_event_loop()

    async def raw() -> None:
        async for _chunk in agen(chunks):
            pass

    async def wrapped() -> None:
        async with meter.stream("tok", model="gpt-4o", key="bench", step=NEVER) as metered:
            async for _chunk in metered.wrap(agen(chunks)):
                pass

    try:
        return (
            best(lambda: loop.run_until_complete(raw())) / len(chunks),
            best(lambda: loop.run_until_complete(wrapped())) / len(chunks),
        )
    finally:
        loop.close()


def per_response(response: Any, model: str, repeat: int) -> float:
    def run() -> None:
        for _ in range(repeat):
            PRICES.amount(model, usage_of(response))

    return best(run) / repeat


def main() -> None:
    # Each benchmarked stream ends without a usage report, which logs a warning.
    logging.getLogger("knai.metering").disabled = True
    # Never contacted: a price of 0 makes the settlement's amount 0, so nothing is sent.
    free = PriceTable(default=Price(0, 0))
    url = "http://127.0.0.1:9"
    sync_meter = Meter(KNAIProvider("sk_bench", "bench", url), free)
    async_meter = AsyncMeter(AsyncKNAIProvider("sk_bench", "bench", url), free)
    print(
        "wrap: CPU per chunk added over iterating the raw stream"
        f" ({CHUNKS} chunks, best of {ROUNDS})"
    )
    print(
        f"{'stream':<32} {'form':<5} {'sync raw':>9} {'sync +':>8} {'async raw':>10} {'async +':>8}"
    )
    worst = 0.0
    for name in ("chat_stream_usage", "response_stream", "anthropic_stream"):
        for form in ("sdk", "json"):
            chunks = body(name, form)
            raw, wrapped = sync_overhead(sync_meter, chunks)
            araw, awrapped = async_overhead(async_meter, chunks)
            added, aadded = (wrapped - raw) * 1e6, (awrapped - araw) * 1e6
            worst = max(worst, added, aadded)
            print(
                f"{name:<32} {form:<5} {raw * 1e6:8.3f}u {added:7.3f}u"
                f" {araw * 1e6:9.3f}u {aadded:7.3f}u"
            )
    print(
        f"worst added: {worst:.3f} us per chunk (target <= 2 us):"
        f" {'PASS' if worst <= 2 else 'FAIL'}"
    )
    print()
    print("usage_of + PriceTable.amount per response")
    repeat = 2_000 if QUICK else 20_000
    cases = [
        (
            "ChatCompletion (cached, reasoning)",
            fx.chat_completion("chat_completion_cached_reasoning"),
        ),
        ("ChatCompletion dict", fx.raw("chat_completion_cached_reasoning")),
        ("Responses Response", fx.response("response_cached_reasoning")),
        ("CreateEmbeddingResponse", fx.embeddings("embeddings")),
        ("anthropic Message (cached)", fx.message("anthropic_message_cached")),
        ("anthropic Message dict", fx.raw("anthropic_message_cached")),
    ]
    worst = 0.0
    for label, response in cases:
        model = response["model"] if isinstance(response, dict) else response.model
        cost = per_response(response, model, repeat) * 1e6
        worst = max(worst, cost)
        print(f"{label:<36} {cost:7.3f} us")
    print(
        f"worst: {worst:.3f} us per response (target <= 10 us): {'PASS' if worst <= 10 else 'FAIL'}"
    )


def inline_increments() -> None:
    """What a sync inline increment costs the stream: wall time, sandbox on loopback."""
    from knai.testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, DEMO_USERNAME, Sandbox

    chunks = body("chat_stream_usage", "json")[:2_000]
    increments = 100
    with Sandbox() as sandbox, sandbox.serve() as running:
        running.admin.top_up(DEMO_PROVIDER_SLUG, DEMO_USERNAME, 10**9)
        with KNAIProvider(DEMO_API_KEY, DEMO_PROVIDER_SLUG, running.url) as provider:
            meter = Meter(provider)

            def run(step: int, key: str) -> float:
                token = running.admin.open_session(DEMO_PROVIDER_SLUG, DEMO_USERNAME).session_token
                start = time.perf_counter()
                with meter.stream(token, model="gpt-4o", key=key, step=step) as metered:
                    for _chunk in metered.wrap(chunks):
                        pass
                return time.perf_counter() - start

            runs = 3 if QUICK else 5
            quiet = min(run(NEVER, f"quiet-{i}") for i in range(runs))
            busy = min(run(len(chunks) // increments, f"busy-{i}") for i in range(runs))
    per = (busy - quiet) / increments * 1e3
    print(f"sync inline increment (sandbox on loopback): {per:.2f} ms of wall time each")


if __name__ == "__main__":
    main()
    print()
    inline_increments()
