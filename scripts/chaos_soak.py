"""Chaos soak: thousands of charges against one sandbox wallet while a fifth of requests fail.

The soak itself (what it does and what it checks) is tests/support/soak.py; this is
its command line. Run it from the repository root::

    python scripts/chaos_soak.py [--charges 4000] [--threads 8] [--tasks 64]
                                 [--fault-rate 0.2] [--seed 1]

It prints the figures and exits 1 if there is any discrepancy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# The engine lives with the tests that run it; `python scripts/chaos_soak.py` puts only
# scripts/ on sys.path, so the repository root goes there too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.soak import SoakConfig, run_soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = SoakConfig()
    parser.add_argument("--charges", type=int, default=defaults.charges)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--tasks", type=int, default=defaults.tasks)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit)
    args = parser.parse_args(argv)
    if args.charges < 0 or args.threads < 1 or args.tasks < 1 or not 0 <= args.fault_rate < 1:
        parser.error("need charges >= 0, threads >= 1, tasks >= 1 and 0 <= fault-rate < 1")
    config = SoakConfig(
        charges=args.charges,
        threads=args.threads,
        tasks=args.tasks,
        fault_rate=args.fault_rate,
        seed=args.seed,
        timeout=args.timeout,
        time_limit=args.time_limit,
    )
    report = run_soak(config)
    for line in report.lines():
        print(line, flush=True)
    return 1 if report.discrepancies else 0


if __name__ == "__main__":
    sys.exit(main())
