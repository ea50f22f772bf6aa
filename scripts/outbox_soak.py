"""Outbox crash soak: charging processes killed with SIGKILL, restarted, then drained.

Worker processes charge a sandbox wallet (served by this process) through an
`Outbox`, each running its own sender, while about `--fault-rate` of the
charge requests fail: statuses the SDK retries, answers slower than its
timeout, connections dropped before or after the debit; and a few charges
exceed the balance (definite 402 refusals). Each worker logs a key once
`charge()` has returned. At random moments a worker is killed with SIGKILL
and started again; a restarted worker re-charges the key it may have been
storing (same key, same charge) and goes on.
Then the faults stop and the store is drained. Afterwards:

- every key whose `charge()` returned is in the store, and nothing is pending;
- every sent charge is in the ledger exactly once, under its send key, for its
  amount; every dead one has a definite refusal and is not in the ledger;
- the ledger holds no other charge, and the balance is the start minus its sum.

    python scripts/outbox_soak.py [--store sqlite|postgres] [--workers 2]
        [--charges 400] [--kills 8] [--fault-rate 0.2] [--seed 1]
        [--postgres-url URL]   (default for postgres: a throwaway server)

It prints the figures and exits 1 on any discrepancy. The tests run a smaller
soak through `run_soak` (tests/outbox/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knai import KNAIProvider
from knai.outbox import Outbox, PostgresStore, SQLiteStore, Store
from knai.testing import Fault, Ledger, serve
from knai.testing.pytest_plugin import quick_retries

SLUG = "outbox-soak"
API_KEY = "sk_test_outbox_soak_key"
USER = "outbox-soak-user"
START_BALANCE = 10_000_000_000
TIMEOUT = 0.5  # each attempt's timeout; a "delay" fault answers later than this
FAULT_KINDS = (
    *(f"status-{s}" for s in (429, 500, 502, 503, 504)),
    "delay",
    "drop-before",
    "drop-after",
)
# Every OVERSIZED-th charge is more than the wallet holds: a real 402, which the
# wallet records under its key like any answer. (An injected 402 would not be:
# it could refuse the replay of a charge already applied, which no wallet that
# honours Idempotency-Key does.)
OVERSIZED = 37
_MAX_QUEUED = 8


@dataclass(frozen=True)
class SoakConfig:
    """The size and the weather of one soak."""

    store: str = "sqlite"
    workers: int = 2
    charges: int = 400  # per worker
    kills: int = 8
    fault_rate: float = 0.2
    seed: int = 1
    postgres_url: str | None = None
    time_limit: float = 600.0


@dataclass
class SoakReport:
    """The figures of one soak; `discrepancies` must be empty."""

    config: SoakConfig
    returned: int = 0
    sent: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    kills_while_charging: int = 0
    attempts: int = 0
    requests: int = 0
    faults_fired: int = 0
    faults_queued: Counter[str] = field(default_factory=Counter)
    ledger_charges: int = 0
    discrepancies: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def lines(self) -> list[str]:
        c = self.config
        rate = self.faults_fired / self.requests if self.requests else 0.0
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.faults_queued.items()))
        return [
            f"outbox crash soak: {c.store}, {c.workers} worker processes x {c.charges} charges,"
            f" fault rate {c.fault_rate:.2f}, seed {c.seed}",
            f"  charge() returned    {self.returned}",
            f"  SIGKILLs             {self.kills} ({self.kills_while_charging} while the worker"
            " was still charging; each worker restarted)",
            f"  sent                 {self.sent} (deliveries {self.attempts})",
            f"  dead (definite)      {sum(self.dead.values())} {dict(self.dead)}",
            f"  charge requests      {self.requests}",
            f"  faults injected      {self.faults_fired} ({rate:.1%} of charge requests)",
            f"    queued by kind     {kinds}",
            f"  ledger               {self.ledger_charges} debits",
            f"  discrepancies        {len(self.discrepancies)}",
            *(f"    - {d}" for d in self.discrepancies[:20]),
            f"  elapsed              {self.elapsed:.1f} s",
        ]


def open_store(spec: dict[str, str]) -> Store:
    if spec["kind"] == "sqlite":
        return SQLiteStore(spec["path"])
    return PostgresStore(spec["url"], table=spec["table"])


# -- the worker process ---------------------------------------------------------


def worker(spec: dict[str, Any]) -> int:
    """Charge keys w<n>-<i> in order, logging each once charge() returned; then drain."""
    log = Path(spec["log"])
    done = log.read_text().split() if log.exists() else []
    start = len(done)
    provider = KNAIProvider(API_KEY, SLUG, spec["url"], timeout=TIMEOUT, max_retries=2)
    quick_retries(provider, 0.01)
    outbox = Outbox(
        provider,
        open_store(spec["store"]),
        concurrency=4,
        poll_interval=0.05,
        retry_backoff=(0.02, 0.3),
        drain_timeout=0,
    )
    outbox.start()
    with log.open("a") as out:
        for i in range(start, spec["charges"]):
            key = f"w{spec['worker']}-{i}"
            amount = START_BALANCE + 1 if i % OVERSIZED == 5 else 1 + i % 97
            outbox.charge(spec["token"], amount, "gpt-4", idempotency_key=key)
            out.write(key + "\n")
            out.flush()
    outbox.drain(spec["drain"])
    outbox.stop(0)
    return 0


# -- the driver -----------------------------------------------------------------


class _Injector(threading.Thread):
    """Keeps about `fault_rate` of charge requests faulty, on the ledger's fault plan."""

    def __init__(self, ledger: Ledger, config: SoakConfig) -> None:
        super().__init__(name="outbox-soak-injector", daemon=True)
        self.faults = ledger.faults
        self.rate = config.fault_rate
        self.rng = random.Random(config.seed + 1)
        self.stop = threading.Event()
        self.queued: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stop.is_set():
            stats = self.faults.stats()
            queued = sum(self.queued.values())
            pending = queued - stats.faults_fired["charge"]
            wanted = math.ceil(self.rate * (stats.requests["charge"] + 1))
            for _ in range(min(wanted - queued, _MAX_QUEUED - pending)):
                kind = self.rng.choice(FAULT_KINDS)
                if kind.startswith("status-"):
                    fault = Fault(status=int(kind[7:]), retry_after="0")
                elif kind == "delay":
                    fault = Fault(delay=TIMEOUT + 0.3)
                else:
                    fault = Fault(drop="before" if kind == "drop-before" else "after")
                self.faults.add("charge", fault)
                self.queued[kind] += 1
            self.stop.wait(0.002)


def _start_worker(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    # The workers' warnings (dead-listed charges) go to a file, not the report.
    with open(spec["log"] + ".stderr", "ab") as errors:
        return subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def _returned(spec: dict[str, Any]) -> int:
    log = Path(spec["log"])
    return len(log.read_text().split()) if log.exists() else 0


def run_soak(config: SoakConfig) -> SoakReport:
    """Run one soak and return its report."""
    started = time.monotonic()
    report = SoakReport(config)
    rng = random.Random(config.seed)
    with tempfile.TemporaryDirectory(prefix="knai-outbox-soak-") as tmp:
        if config.store == "sqlite":
            store_spec = {"kind": "sqlite", "path": str(Path(tmp) / "outbox.db")}
        else:
            assert config.postgres_url is not None
            table = f"soak_{uuid.uuid4().hex[:12]}"
            store_spec = {"kind": "postgres", "url": config.postgres_url, "table": table}
        open_store(store_spec).close()  # the schema exists before the workers race
        with serve(Ledger()) as running:
            admin = running.admin
            admin.create_provider(SLUG, API_KEY)
            admin.create_user(SLUG, USER, balance=START_BALANCE)
            token = admin.open_session(SLUG, USER).session_token
            injector = _Injector(running.ledger, config)
            injector.start()
            specs = [
                {
                    "worker": n,
                    "url": running.url,
                    "token": token,
                    "store": store_spec,
                    "log": str(Path(tmp) / f"returned-{n}.log"),
                    "charges": config.charges,
                    "drain": config.time_limit,
                }
                for n in range(config.workers)
            ]
            procs = [_start_worker(s) for s in specs]
            deadline = time.monotonic() + config.time_limit
            try:
                while report.kills < config.kills and time.monotonic() < deadline:
                    time.sleep(rng.uniform(0.05, 0.5))
                    alive = [n for n, p in enumerate(procs) if p.poll() is None]
                    if not alive:
                        break
                    victim = rng.choice(alive)
                    charging = _returned(specs[victim]) < config.charges
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait()
                    report.kills += 1
                    report.kills_while_charging += charging
                    procs[victim] = _start_worker(specs[victim])
                for proc in procs:
                    proc.wait(max(1.0, deadline - time.monotonic()))
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                injector.stop.set()
                injector.join(10)
            admin.clear_faults()
            _final_drain(running.url, store_spec, report)
            stats = admin.stats()
            report.requests = stats.requests["charge"]
            report.faults_fired = stats.faults_fired["charge"]
            report.faults_queued = injector.queued
            returned = [k for s in specs for k in Path(s["log"]).read_text().split()]
            check(report, open_store(store_spec), admin.charges(SLUG, USER), returned)
            if admin.balance(SLUG, USER) != START_BALANCE - sum(
                c.amount_tokens for c in admin.charges(SLUG, USER)
            ):
                report.discrepancies.append("the balance is not the start minus the ledger")
    report.elapsed = time.monotonic() - started
    return report


def _final_drain(url: str, store_spec: dict[str, str], report: SoakReport) -> None:
    with KNAIProvider(API_KEY, SLUG, url, timeout=5.0) as provider:
        outbox = Outbox(provider, open_store(store_spec), poll_interval=0.05)
        if not outbox.drain(120):
            report.discrepancies.append("the final drain left charges pending")
        outbox.close()


def check(report: SoakReport, store: Store, ledger: Sequence[Any], returned: list[str]) -> None:
    """Compare the store's rows, the keys charge() returned for, and the wallet's ledger."""
    found = report.discrepancies
    by_key: Counter[str] = Counter(str(c.idempotency_key) for c in ledger)
    amount_of = {str(c.idempotency_key): c.amount_tokens for c in ledger}
    report.ledger_charges = len(ledger)
    rows = {
        e.idempotency_key: e for state in ("sent", "dead", "pending") for e in store.entries(state)
    }
    report.returned = len(returned)
    accounted: set[str] = set()
    for key in returned:
        if key not in rows:
            found.append(f"{key}: charge() returned but the store lost it")
    for key, entry in rows.items():
        keys = [key, *(f"{key}:retry{n}" for n in range(1, entry.retries + 1))]
        accounted.update(keys)
        charged = sum(by_key[k] for k in keys)
        report.attempts += entry.attempts
        if entry.state == "sent":
            report.sent += 1
            if by_key[entry.send_key] != 1 or charged != 1:
                found.append(f"{key}: sent but charged {charged} times")
            elif amount_of[entry.send_key] != entry.amount_tokens:
                found.append(
                    f"{key}: charged {amount_of[entry.send_key]}, not {entry.amount_tokens}"
                )
        elif entry.state == "dead":
            status = entry.error.status_code if entry.error else None
            report.dead[str(status)] += 1
            if status is None or not 400 <= status < 500 or status in (408, 429):
                found.append(f"{key}: dead without a definite refusal ({entry.error})")
            if charged:
                found.append(f"{key}: dead but charged {charged} times")
        else:
            found.append(f"{key}: still pending after the drain")
    for key in by_key:
        if key not in accounted:
            found.append(f"{key}: in the ledger but not in the store")
    store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--charges", type=int, default=400, help="per worker")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", help="default for --store postgres: a throwaway server")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    workers = args.workers or (4 if args.store == "postgres" else 2)
    config = SoakConfig(
        store=args.store,
        workers=workers,
        charges=args.charges,
        kills=args.kills,
        fault_rate=args.fault_rate,
        seed=args.seed,
        postgres_url=args.postgres_url,
    )
    if args.store == "postgres" and args.postgres_url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.outbox._postgres_server import postgres_server

        with postgres_server() as url:
            report = run_soak(SoakConfig(**{**config.__dict__, "postgres_url": url}))
    else:
        report = run_soak(config)
    print("\n".join(report.lines()))
    return 1 if report.discrepancies else 0


if __name__ == "__main__":
    sys.exit(main())
