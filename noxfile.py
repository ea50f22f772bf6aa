"""nox sessions: the test suite on every Python that knai-provider supports.

    nox -s tests-3.12          # one version (nox finds `python3.12` on PATH)
    nox -s tests               # every supported version
    nox -s tests-3.13 -- -n 0 -x tests/test_retry.py   # arguments after -- go to pytest

Each session installs the project with its dev extra into its own virtual
environment under .nox/ and runs pytest (pyproject's options: xdist workers).
ruff and mypy do not depend on the interpreter and run once, in the README's
test command. `.ci/run` runs these sessions for the versions other than its own.
"""

from __future__ import annotations

import nox

# requires-python says >=3.10; every minor version from there to the newest CPython.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on one Python version."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)
