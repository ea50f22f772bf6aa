"""The chaos soak's engine: thousands of charges on one sandbox wallet, a fifth of requests failing.

Several threads (one shared `KNAIProvider`) and many asyncio tasks (one shared
`AsyncKNAIProvider`) charge one wallet served by the sandbox on loopback. Meanwhile
an injector keeps about `fault_rate` of the charge requests faulty through the
sandbox's admin API: every status the SDK retries (408, 429, 500, 502, 503, 504;
with and without `Retry-After: 0`), answers slower than the client waits for,
and connections dropped before or after the debit. Each charge's outcome is
recorded as the SDK reported it: success, definite failure, or unknown
(`may_have_been_applied`). Afterwards the wallet's ledger is checked against
those reports:

- every charge reported successful is in the ledger exactly once, as reported;
- every definite failure is not in the ledger at all;
- every unknown outcome is settled by replaying its idempotency key, and the
  replay agrees with the ledger: applied once or not at all, never twice;
- no idempotency key is debited twice, no debit is a stranger's, and the final
  balance is the start minus the ledger's sum.

`run_soak(SoakConfig(...))` runs one and returns its `SoakReport`. The command
`python scripts/chaos_soak.py` runs the full-sized soak; the tests run a smaller
one (tests/reliability/test_chaos_soak.py).
"""

from __future__ import annotations

import asyncio
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from knai import AsyncKNAIProvider, ChargeResult, KNAIError, KNAIProvider
from knai.testing import Fault, Ledger, SandboxAdmin, serve
from knai.testing.pytest_plugin import quick_retries

SLUG = "soak-provider"
API_KEY = "sk_test_soak_provider_key"
USER = "soak-user"
MODEL = "gpt-4"
START_BALANCE = 10_000_000_000
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)
_MAX_PENDING = 8  # faults queued ahead at most: they strike consecutive requests
FAULT_KINDS = (*(f"status-{s}" for s in RETRIED_STATUSES), "delay", "drop-before", "drop-after")


@dataclass(frozen=True)
class SoakConfig:
    """The size and the weather of one soak."""

    charges: int = 4000
    threads: int = 8
    tasks: int = 64
    fault_rate: float = 0.2
    seed: int = 1
    timeout: float = 1.0  # each attempt's timeout; a "delay" fault answers later than this
    time_limit: float = 600.0  # no charge starts after this many seconds
    oversized_share: float = 0.02  # charges the wallet cannot cover: definite 402s
    revoked_share: float = 0.01  # charges on a revoked session: definite 403s
    backoff: float = 0.01  # the first retry pause (doubling, capped at 5x)

    @property
    def delay(self) -> float:
        return self.timeout + 0.5


@dataclass(frozen=True)
class PlannedCharge:
    index: int
    key: str
    amount: int
    revoked: bool
    max_retries: int


@dataclass
class Outcome:
    """A charge as the SDK reported it."""

    charge: PlannedCharge
    kind: str  # "success", "failed" (definite), "unknown" (may have been applied), "crashed"
    by: str  # "thread" or "task"
    charge_id: str | None = None
    retries: int = 0
    replayed: bool = False
    error: str = ""
    status: int | None = None
    reported_key: str | None = None


@dataclass
class SoakReport:
    """The figures of one soak; `discrepancies` must be empty."""

    config: SoakConfig
    outcomes: list[Outcome] = field(default_factory=list)
    requests: int = 0
    faults_fired: int = 0
    faults_queued: Counter[str] = field(default_factory=Counter)
    settled: Counter[str] = field(default_factory=Counter)
    ledger_charges: int = 0
    ledger_sum: int = 0
    final_balance: int = 0
    discrepancies: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def lines(self) -> list[str]:
        c = self.config
        succeeded = [o for o in self.outcomes if o.kind == "success"]
        failed = Counter(o.error for o in self.outcomes if o.kind == "failed")
        unknown = Counter(o.error for o in self.outcomes if o.kind == "unknown")
        by = Counter(o.by for o in self.outcomes)
        rate = self.faults_fired / self.requests if self.requests else 0.0
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.faults_queued.items()))
        return [
            f"chaos soak: {c.charges} charges, {c.threads} threads + {c.tasks} tasks,"
            f" fault rate {c.fault_rate:.2f}, seed {c.seed}, timeout {c.timeout:g} s",
            f"  charges attempted    {len(self.outcomes)}"
            f" (by threads {by['thread']}, by tasks {by['task']})",
            f"  succeeded            {len(succeeded)}"
            f" (after retries {sum(1 for o in succeeded if o.retries)},"
            f" answered by a replay {sum(1 for o in succeeded if o.replayed)})",
            f"  failed (definite)    {self.count('failed')} {_breakdown(failed)}",
            f"  unknown outcome      {self.count('unknown')} {_breakdown(unknown)}",
            f"  replayed to settle   {sum(self.settled.values())} {_breakdown(self.settled)}",
            f"  charge requests      {self.requests}",
            f"  faults injected      {self.faults_fired} ({rate:.1%} of charge requests)",
            f"    queued by kind     {kinds}",
            f"  ledger               {self.ledger_charges} debits, {self.ledger_sum} tokens;"
            f" balance {START_BALANCE} -> {self.final_balance}",
            f"  discrepancies        {len(self.discrepancies)}",
            *(f"    - {d}" for d in self.discrepancies[:20]),
            f"  elapsed              {self.elapsed:.1f} s",
        ]


def _breakdown(counter: Counter[str]) -> str:
    if not counter:
        return ""
    return "(" + ", ".join(f"{k} {n}" for k, n in counter.most_common()) + ")"


def plan(config: SoakConfig) -> list[PlannedCharge]:
    """The charges to make: mostly small, a few too big, a few on a revoked session."""
    rng = random.Random(config.seed)
    charges = []
    for index in range(config.charges):
        oversized = rng.random() < config.oversized_share
        charges.append(
            PlannedCharge(
                index=index,
                key=f"soak-{config.seed}-{index:06d}",
                amount=START_BALANCE * 2 if oversized else rng.randint(1, 1000),
                revoked=rng.random() < config.revoked_share,
                max_retries=rng.choice((0, 1, 2, 3)),
            )
        )
    return charges


def outcome_of(charge: PlannedCharge, by: str, result: Any, error: BaseException | None) -> Outcome:
    """Classify what `charge()` returned or raised, as a caller of the SDK would."""
    if error is None:
        assert isinstance(result, ChargeResult)
        return Outcome(
            charge,
            "success",
            by,
            charge_id=result.charge_id,
            retries=result.meta.retries,
            replayed=result.meta.headers.get("idempotent-replayed") == "true",
            reported_key=result.meta.idempotency_key,
        )
    if isinstance(error, KNAIError):
        return Outcome(
            charge,
            "unknown" if error.may_have_been_applied else "failed",
            by,
            error=type(error).__name__ if error.status_code is None else str(error.status_code),
            status=error.status_code,
            reported_key=error.idempotency_key,
        )
    return Outcome(charge, "crashed", by, error=f"{type(error).__name__}: {error}")


class _Injector(threading.Thread):
    """Keeps about `fault_rate` of the charge requests faulty.

    It watches the sandbox's request counters and tops the fault queue up to
    the rate, a few faults at most at a time, so faults stay spread over the
    run instead of striking in one burst. It works on the ledger's fault plan
    in-process: over HTTP its calls would queue behind the very traffic they
    are meant to disrupt, and fall behind it.
    """

    def __init__(self, ledger: Ledger, config: SoakConfig) -> None:
        super().__init__(name="soak-fault-injector", daemon=True)
        self.faults = ledger.faults
        self.config = config
        self.rng = random.Random(config.seed + 1)
        self.stop = threading.Event()
        self.queued: Counter[str] = Counter()
        self.failure: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.config.time_limit + 60
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                stats = self.faults.stats()
                queued = sum(self.queued.values())
                pending = queued - stats.faults_fired["charge"]
                # One request ahead, so the next request can be struck.
                wanted = math.ceil(self.config.fault_rate * (stats.requests["charge"] + 1))
                for _ in range(min(wanted - queued, _MAX_PENDING - pending)):
                    self._inject()
                self.stop.wait(0.002)
        except BaseException as exc:  # reported as a discrepancy, never swallowed
            self.failure = exc

    def _inject(self) -> None:
        kind = self.rng.choice(FAULT_KINDS)
        if kind.startswith("status-"):
            retry_after = self.rng.choice((None, "0"))
            fault = Fault(status=int(kind[7:]), retry_after=retry_after)
            kind += "" if retry_after is None else "+retry-after-0"
        elif kind == "delay":
            fault = Fault(delay=self.config.delay)
        else:
            fault = Fault(drop="before" if kind == "drop-before" else "after")
        self.faults.add("charge", fault)
        self.queued[kind] += 1


def _run_threads(
    provider: KNAIProvider,
    work: queue.SimpleQueue[PlannedCharge],
    tokens: dict[bool, str],
    outcomes: list[Outcome],
    deadline: float,
    count: int,
) -> list[threading.Thread]:
    def worker() -> None:
        while time.monotonic() < deadline:
            try:
                charge = work.get_nowait()
            except queue.Empty:
                return
            result, error = None, None
            try:
                result = provider.charge(
                    tokens[charge.revoked],
                    charge.amount,
                    MODEL,
                    idempotency_key=charge.key,
                    max_retries=charge.max_retries,
                )
            except Exception as exc:
                error = exc
            outcomes.append(outcome_of(charge, "thread", result, error))

    threads = [threading.Thread(target=worker, name=f"soak-{n}") for n in range(count)]
    for thread in threads:
        thread.start()
    return threads


async def _run_tasks(
    url: str,
    config: SoakConfig,
    work: queue.SimpleQueue[PlannedCharge],
    tokens: dict[bool, str],
    outcomes: list[Outcome],
    deadline: float,
) -> None:
    async with AsyncKNAIProvider(API_KEY, SLUG, url, timeout=config.timeout) as provider:
        quick_retries(provider, config.backoff)

        async def task() -> None:
            while time.monotonic() < deadline:
                try:
                    charge = work.get_nowait()
                except queue.Empty:
                    return
                result, error = None, None
                try:
                    result = await provider.charge(
                        tokens[charge.revoked],
                        charge.amount,
                        MODEL,
                        idempotency_key=charge.key,
                        max_retries=charge.max_retries,
                    )
                except Exception as exc:
                    error = exc
                outcomes.append(outcome_of(charge, "task", result, error))

        await asyncio.gather(*(task() for _ in range(config.tasks)))


def _settle(
    provider: KNAIProvider, charge: PlannedCharge, token: str, attempts: int = 10
) -> ChargeResult | KNAIError:
    """Replay an unknown charge with its key until the wallet gives a definite answer."""
    error: KNAIError | None = None
    for _ in range(attempts):
        try:
            return provider.charge(
                token, charge.amount, MODEL, idempotency_key=charge.key, max_retries=3
            )
        except KNAIError as exc:
            error = exc
            if not exc.may_have_been_applied:
                return exc
            time.sleep(0.05)
    assert error is not None
    return error


def check(
    report: SoakReport,
    admin: SandboxAdmin,
    provider: KNAIProvider,
    planned: Sequence[PlannedCharge],
    tokens: dict[bool, str],
) -> None:
    """Hold the ledger against what the SDK reported; settle unknowns by replay."""
    problems = report.discrepancies
    if len(report.outcomes) != len(planned):
        problems.append(f"{len(planned) - len(report.outcomes)} charges have no outcome")
    known_keys = {c.key for c in planned}
    before = admin.charges(SLUG, USER)
    debits = Counter(c.idempotency_key for c in before)
    by_key = {c.idempotency_key: c for c in before}
    for key, n in debits.items():
        if key not in known_keys:
            problems.append(f"a debit of {n} charge(s) with a key no charge used: {key!r}")
        elif n > 1:
            problems.append(f"{key}: debited {n} times")
    for outcome in report.outcomes:
        charge = outcome.charge
        if outcome.kind == "crashed":
            problems.append(f"{charge.key}: raised a non-KNAI exception: {outcome.error}")
            continue
        if outcome.reported_key != charge.key:
            problems.append(f"{charge.key}: reported idempotency key {outcome.reported_key!r}")
        applied = by_key.get(charge.key)
        if outcome.kind == "success":
            if applied is None:
                problems.append(f"{charge.key}: reported charged but not in the ledger")
            elif (applied.charge_id, applied.amount_tokens) != (outcome.charge_id, charge.amount):
                problems.append(f"{charge.key}: reported {outcome.charge_id}, ledger differs")
        elif outcome.kind == "failed":
            if applied is not None:
                problems.append(f"{charge.key}: reported a definite failure but was debited")
        else:
            _settle_one(report, admin, provider, charge, tokens[charge.revoked], applied)
    after = admin.charges(SLUG, USER)
    keys_after = Counter(c.idempotency_key for c in after)
    for key, n in keys_after.items():
        if n > 1:
            problems.append(f"{key}: debited {n} times after settling")
    report.ledger_charges = len(after)
    applied_on_replay = ("already applied", "applied by the replay")
    accounted = report.count("success") + sum(report.settled[how] for how in applied_on_replay)
    if report.ledger_charges != accounted:
        problems.append(f"{report.ledger_charges} debits, but {accounted} charges were applied")
    report.ledger_sum = sum(c.amount_tokens for c in after)
    report.final_balance = admin.balance(SLUG, USER)
    if report.final_balance != START_BALANCE - report.ledger_sum:
        problems.append(
            f"balance {report.final_balance} != start {START_BALANCE} - debits {report.ledger_sum}"
        )


def _settle_one(
    report: SoakReport,
    admin: SandboxAdmin,
    provider: KNAIProvider,
    charge: PlannedCharge,
    token: str,
    applied_before: Any,
) -> None:
    """Replay one unknown charge and hold its answer against the ledger."""
    settled = _settle(provider, charge, token)
    debits = [
        (c.charge_id, c.amount_tokens)
        for c in admin.charges(SLUG, USER)
        if c.idempotency_key == charge.key
    ]
    problems = report.discrepancies
    if isinstance(settled, ChargeResult):
        replayed = settled.meta.headers.get("idempotent-replayed") == "true"
        report.settled["already applied" if replayed else "applied by the replay"] += 1
        if replayed != (applied_before is not None):
            problems.append(f"{charge.key}: replayed={replayed}, debited before: {applied_before}")
        if debits != [(settled.charge_id, charge.amount)]:
            problems.append(f"{charge.key}: settled as {settled.charge_id}, ledger has {debits}")
    elif settled.may_have_been_applied:
        report.settled["unresolved"] += 1
        problems.append(f"{charge.key}: still unknown after replays: {settled!r}")
    else:
        report.settled[f"refused {settled.status_code}"] += 1
        if debits:
            problems.append(f"{charge.key}: settled as refused, yet debited: {debits}")


def open_wallet(admin: SandboxAdmin) -> dict[bool, str]:
    """Create the soak's provider and wallet; returns {revoked: session token}."""
    admin.create_provider(SLUG, API_KEY)
    admin.create_user(SLUG, USER, balance=START_BALANCE)
    live = admin.open_session(SLUG, USER)
    revoked = admin.open_session(SLUG, USER)
    admin.revoke_session(revoked.session_id)
    return {False: live.session_token, True: revoked.session_token}


def run_soak(config: SoakConfig) -> SoakReport:
    """Run one soak against a fresh sandbox on loopback and return its report."""
    started = time.monotonic()
    report = SoakReport(config)
    planned = plan(config)
    with serve(Ledger()) as running:
        admin = running.admin
        tokens = open_wallet(admin)

        work: queue.SimpleQueue[PlannedCharge] = queue.SimpleQueue()
        for charge in planned:
            work.put(charge)
        outcomes: list[Outcome] = []  # list.append is atomic: threads and tasks share it
        deadline = time.monotonic() + config.time_limit
        injector = _Injector(running.ledger, config)
        injector.start()
        with KNAIProvider(API_KEY, SLUG, running.url, timeout=config.timeout) as provider:
            quick_retries(provider, config.backoff)
            threads = _run_threads(provider, work, tokens, outcomes, deadline, config.threads)
            try:
                asyncio.run(_run_tasks(running.url, config, work, tokens, outcomes, deadline))
            finally:
                for thread in threads:
                    thread.join(config.time_limit + 60)
                injector.stop.set()
                injector.join(30)
        report.outcomes = sorted(outcomes, key=lambda o: o.charge.index)
        report.faults_queued = injector.queued
        if injector.failure is not None:
            report.discrepancies.append(f"the fault injector failed: {injector.failure!r}")
        admin.clear_faults()
        time.sleep(config.delay + 0.5)  # let slow attempts still in the server land first
        stats = admin.stats()
        report.requests = stats.requests["charge"]
        report.faults_fired = stats.faults_fired["charge"]
        if planned and len(report.outcomes) < len(planned):
            report.discrepancies.append("the time limit ended the soak early")
        with KNAIProvider(API_KEY, SLUG, running.url, timeout=config.timeout) as settler:
            quick_retries(settler, config.backoff)
            check(report, admin, settler, planned[: len(report.outcomes)], tokens)
    report.elapsed = time.monotonic() - started
    return report
