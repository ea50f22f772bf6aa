"""The knai-provider benchmark suite (issue 4), in one command.

    python benchmarks/run.py            # full run, about 6 minutes on 2 cores
    python benchmarks/run.py --quick    # about 1 minute, fewer rounds and calls

Starts its own loopback keep-alive server in a subprocess, installs
knai-provider 0.1.0 (and matplotlib for the chart) into benchmarks/.vendor on
first use, measures sync charge CPU, async throughput, import time, memory and
wait_for_session latency, prints the tables and writes benchmarks/RESULTS.md and
benchmarks/results.png (a --quick run writes benchmarks/quick/ instead, which
git ignores, so the tracked figures only ever come from a full run; --out DIR
writes elsewhere). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import _measure
import _report
import _variants
from _server import BenchServer
from _vendor import load_knai_010

HERE = Path(__file__).resolve().parent
SECTIONS = ("sync", "async", "latency", "memory", "import", "wait")

SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "sync_rounds": 15,
        "sync_calls": 2000,
        "async_rounds": 9,
        "async_calls": 1200,
        "latency_rounds": 3,
        "latency_calls": {1: 20, 128: 1200},
        "memory_calls": 100_000,
        "import_runs": 30,
        "wait_intervals": [0.25, 1.0],
        "wait_trials": 12,
    },
    "quick": {
        "sync_rounds": 5,
        "sync_calls": 500,
        "async_rounds": 3,
        "async_calls": 400,
        "latency_rounds": 1,
        "latency_calls": {1: 10, 128: 400},
        "memory_calls": 20_000,
        "import_runs": 10,
        "wait_intervals": [0.5],
        "wait_trials": 6,
    },
}
ASYNC_LEVELS = [1, 8, 64]
LATENCY_MS = 100.0
MEMORY_WARMUP = 1000


def _identity(server: BenchServer) -> dict[str, Any]:
    last = server.last()[_variants.CHARGE_PATH]
    return _variants.request_identity(last["head"], last["body"])


def _compare(seen: dict[str, dict[str, Any]], kind: str) -> None:
    differ = [name for name, identity in seen.items() if identity != seen["ours"]]
    if differ:
        print(f"WARNING: these {kind} variants send a request unlike ours: {differ}")
        for name in ["ours", *differ]:
            print(f"  {name}: {seen[name]}")
    else:
        print(f"[check] {kind} variants {', '.join(seen)} send identical requests", flush=True)


def _check_sync_requests(server: BenchServer, variants: list[_variants.SyncVariant]) -> None:
    """Each sync variant but 0.1.0 must send our SDK's request; say so, or what differs."""
    seen = {}
    for variant in variants:
        if variant.name != "0.1.0":
            variant.call()
            seen[variant.name] = _identity(server)
    _compare(seen, "sync")


def _check_async_requests(server: BenchServer) -> None:
    async def each() -> dict[str, dict[str, Any]]:
        seen = {}
        for name, factory in _variants.ASYNC_FACTORIES.items():
            variant = factory(server.url)
            await variant.call()
            await variant.close()
            seen[name] = _identity(server)
        return seen

    _compare(asyncio.run(each()), "async")


def _check_imports() -> None:
    import knai

    if "src" not in Path(knai.__file__).parts:
        raise SystemExit(f"`knai` resolves to {knai.__file__}, not the project's src/")


def output_dir(quick: bool, out: Path | None = None) -> Path:
    """Where RESULTS.md and results.png go: --out, else quick/ for a --quick run."""
    if out is not None:
        return out
    return HERE / "quick" if quick else HERE


def main() -> int:
    parser = argparse.ArgumentParser(description="knai-provider benchmarks (issue 4)")
    parser.add_argument("--quick", action="store_true", help="~1-2 minute run")
    parser.add_argument(
        "--skip", action="append", choices=SECTIONS, default=[], help="skip a section"
    )
    parser.add_argument("--no-chart", action="store_true", help="do not draw results.png")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    parser.add_argument(
        "--out", type=Path, help="folder for RESULTS.md and results.png (default: see above)"
    )
    args = parser.parse_args()
    out = output_dir(args.quick, args.out)
    mode = "quick" if args.quick else "full"
    settings = SETTINGS[mode]
    report = _report.Report(mode, dict(settings))
    started = time.monotonic()
    load_knai_010()
    _check_imports()

    with BenchServer() as server:
        print(f"[server] raw asyncio HTTP/1.1 keep-alive server at {server.url}", flush=True)
        if "sync" not in args.skip:
            variants = [factory(server.url) for factory in _variants.SYNC_FACTORIES.values()]
            _check_sync_requests(server, variants)
            print("[sync] charge, interleaved rounds", flush=True)
            samples = _measure.sync_rounds(
                server, variants, settings["sync_rounds"], settings["sync_calls"], warmup=200
            )
            for variant in variants:
                variant.close()
            _report.sync_section(report, samples)
        if "async" not in args.skip:
            _check_async_requests(server)
            print(f"[async] throughput at {ASYNC_LEVELS} tasks, interleaved rounds", flush=True)
            async_samples = _measure.async_rounds(
                server,
                list(_variants.ASYNC_FACTORIES),
                dict.fromkeys(ASYNC_LEVELS, settings["async_calls"]),
                settings["async_rounds"],
            )
            _report.async_section(report, async_samples)
        if "memory" not in args.skip:
            results = []
            # 64 connections' buffers settle the allocator over tens of thousands of
            # charges (RSS then stays flat, as do Python's objects): a longer warm-up.
            for name, warmup in (
                ("ours", MEMORY_WARMUP),
                ("httpx", MEMORY_WARMUP),
                ("async:ours", settings["memory_calls"] // 2),
            ):
                calls = warmup + settings["memory_calls"] - MEMORY_WARMUP
                print(f"[memory] {name}: {calls:,} charges", flush=True)
                results.append(_measure.memory(server.url, name, warmup, calls))
            _report.memory_section(report, results)

    if "latency" not in args.skip:
        with BenchServer(latency_ms=LATENCY_MS) as slow:
            print(f"[latency] async throughput, server {LATENCY_MS:g} ms away", flush=True)
            slow_samples = _measure.async_rounds(
                slow,
                list(_variants.ASYNC_FACTORIES),
                settings["latency_calls"],
                settings["latency_rounds"],
            )
        _report.latency_section(report, slow_samples, LATENCY_MS)
    if "import" not in args.skip:
        print(f"[import] compiled {_measure.compile_bytecode()} modules' bytecode", flush=True)
        print(f"[import] {settings['import_runs']} runs of each command", flush=True)
        times = _measure.import_times(settings["import_runs"])
        profile = _measure.import_profile(5 if mode == "full" else 3)
        _report.import_section(report, times, profile)
    if "wait" not in args.skip:
        print("[wait] wait_for_session against the sandbox", flush=True)
        delays = _measure.session_waits(settings["wait_intervals"], settings["wait_trials"])
        _report.wait_section(report, delays)

    text = _report.markdown(report, _report.machine())
    print("\n" + text)
    # The optimisation log is written by hand (what each change bought); it
    # travels with every generated RESULTS.md.
    log = HERE / "OPTIMISATIONS.md"
    if log.exists():
        text += "\n" + log.read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text(text)
    print(f"wrote {out / 'RESULTS.md'}")
    if not args.no_chart and _report.chart(report, out / "results.png"):
        print(f"wrote {out / 'results.png'}")
    print(f"total {time.monotonic() - started:.0f} s")
    failed = [t.name for t in report.targets if not t.passed]
    print(f"targets and guards: {len(report.targets) - len(failed)} pass, {len(failed)} fail")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
