"""Code both type checkers must reject: each line marked `# must fail` is an error.

Never run, and left out of the normal mypy and pyright runs: tests/test_typing.py
checks it on its own and fails unless mypy --strict and pyright strict each
report an error on every marked line, and on no other line.
"""

# ruff: noqa: I001, F401 - a misspelt import stays on its own marked line, unused

from __future__ import annotations

import knai
from knai import KNAIProvider, Session, SessionStatus
from knai import Sesion  # must fail
from knai.testing import Sandbx  # must fail
from knai.metering import Metr  # must fail
from knai.sessions import SesionCache  # must fail
from knai.outbox import Outbx  # must fail
from knai.fastapi import Paywal  # must fail


def misuse(session: Session, provider: KNAIProvider) -> None:
    print(knai.KNAIProvidr)  # must fail
    print(session.status == "actve")  # must fail
    status: SessionStatus = "actve"  # must fail
    print(status)
    session.status = "pending"  # must fail
    provider.charge("tok", 5, "gpt-4", idempotency="order-42")  # must fail
    provider.charge("tok", amount_tokens="5", model="gpt-4")  # must fail
