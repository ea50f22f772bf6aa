"""What the pytest plugin's fixtures cost per test (issue 9, item 11).

    python benchmarks/plugin_fixtures.py [--tests 100]

Writes a throwaway suite of N tests that each use one fixture and does one
charge, runs it with pytest in a subprocess (once with N tests, once with 1),
and prints the wall time per extra test: (time(N) - time(1)) / (N - 1), so
pytest's own start-up and the session-scoped set-up cancel out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYNC = """
def test_{i}(knai_provider, knai_sandbox_server):
    token = knai_sandbox_server.admin.open_session("demo-provider", "demo-user").session_token
    knai_provider.charge(token, 1, "gpt-4")
"""
ASYNC = """
import pytest

@pytest.mark.anyio
async def test_{i}(knai_async_provider, knai_sandbox_server):
    token = knai_sandbox_server.admin.open_session("demo-provider", "demo-user").session_token
    await knai_async_provider.charge(token, 1, "gpt-4")
"""
HEAD = """
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def run_suite(body: str, count: int, plugin: str | None = None) -> float:
    with tempfile.TemporaryDirectory() as folder:
        tests = HEAD + "".join(
            body.format(i=i).replace("import pytest\n", "") for i in range(count)
        )
        (Path(folder) / "test_bench.py").write_text(tests)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        started = time.perf_counter()
        done = subprocess.run(
            [
                *(
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "no:asyncio",
                ),
                *(("-p", "no:knai", "-p", plugin) if plugin else ()),
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument(
        "--plugin",
        help="an importable module to load instead of knai's plugin (an older copy, to compare)",
    )
    args = parser.parse_args()
    for name, body in (("knai_provider (sync)", SYNC), ("knai_async_provider", ASYNC)):
        one = min(run_suite(body, 1, args.plugin) for _ in range(2))
        many = run_suite(body, args.tests, args.plugin)
        per_test = (many - one) / (args.tests - 1)
        print(
            f"{name:<22} {args.tests} tests {many:6.2f} s, 1 test {one:5.2f} s:"
            f" {per_test * 1000:6.1f} ms per test"
        )


if __name__ == "__main__":
    main()
