"""What the sync and async metered streams share: arguments, outcomes, settlement.

Unknown outcomes: an increment whose charge fails without a refusal (no
answer, a 5xx, a 429 after the retries) is not charged anew under another
key. It is kept in `unsettled` with its key and amount and replayed, with that
same key and amount, when the stream settles; the wallet's idempotency record
then applies it once or returns the charge it already made. The increments
after it are computed as if it had succeeded, so the amounts stay a function
of the chunks alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from knai import KNAIError

from ._prices import Price
from ._tally import StreamTally
from ._usage import Usage

__all__ = ["DEFAULT_STEP", "REFUSALS", "MeteredBase", "UnsettledCharge", "check_stream_args"]

log = logging.getLogger("knai.metering")

REFUSALS = frozenset({402, 403, 410})
"""Statuses that mean the wallet will not pay: stop the stream."""

DEFAULT_STEP = 1_000
_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def check_stream_args(session_token: object, model: object, key: object, step: object) -> None:
    """Raise `ValueError`/`TypeError` naming the bad argument, before anything is sent."""
    if not isinstance(session_token, str) or not session_token.strip():
        raise ValueError("session_token must be a non-empty string")
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(
            "key must be 1 to 200 printable ASCII characters without spaces"
            " (the increments' idempotency keys are built from it)"
        )
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError("step must be an int (wallet tokens)")
    if step < 1:
        raise ValueError("step must be >= 1")


@dataclass(frozen=True)
class UnsettledCharge:
    """A stream charge whose outcome is unknown: replay it with this key and amount.

    Attributes:
        idempotency_key: The key it was sent with.
        amount_tokens: Its amount.
        error: The last error it met (`error.may_have_been_applied` says
            whether the wallet may have applied it).
    """

    idempotency_key: str
    amount_tokens: int
    error: KNAIError


class MeteredBase:
    """The state of one metered stream; `MeteredStream` and `AsyncMeteredStream` drive it.

    Attributes:
        model: The model charged for.
        key: The base of the idempotency keys (`f"{key}:{n}"`, `f"{key}:final"`).
        charged: Wallet tokens the wallet confirmed charging for this stream.
        stopped: The refusal (402, 403, 410) that stopped the stream, or None.
        unsettled: Charges whose outcome is still unknown after settling.
    """

    def __init__(self, session_token: str, model: str, key: str, step: int, price: Price) -> None:
        self._token = session_token
        self.model: str = model
        self.key: str = key
        self.charged: int = 0
        self.stopped: KNAIError | None = None
        self.unsettled: list[UnsettledCharge] = []
        self._tally = StreamTally(price, step)
        self._final_sent = False
        self._warned = False

    @property
    def usage(self) -> Usage:
        """The usage the provider reported, else the lower bound of what was streamed."""
        return self._tally.usage

    @property
    def exact(self) -> bool:
        """True when `usage` came from the provider's report."""
        return self._tally.exact

    @property
    def increments(self) -> int:
        """How many increments were due while the stream flowed."""
        return self._tally.increments

    def _increment_key(self) -> str:
        return f"{self.key}:{self._tally.increments}"

    def _succeeded(self, amount: int) -> None:
        self.charged += amount

    def _failed(self, key: str, amount: int, exc: KNAIError) -> None:
        if exc.status_code in REFUSALS:
            if self.stopped is None:
                self.stopped = exc
            return
        self.unsettled.append(UnsettledCharge(key, amount, exc))
        log.warning(
            "metered stream charge %s of %d tokens failed (%s); it is replayed with the"
            " same key when the stream settles",
            key,
            amount,
            type(exc).__name__,
        )

    def _settlement(self) -> list[tuple[str, int]]:
        """The charges settling sends now: unsettled replays, then the rest once."""
        todo = [(u.idempotency_key, u.amount_tokens) for u in self.unsettled]
        self.unsettled = []
        if not self._final_sent and self.stopped is None:
            self._final_sent = True
            rest = self._tally.rest()
            if rest:
                todo.append((f"{self.key}:final", rest))
            if not self._tally.exact and not self._warned:
                self._warned = True
                log.warning(
                    "metered stream %s of %s ended without a usage report; charged the"
                    " lower bound of what was streamed. For exact usage, consume the stream"
                    " to its end and, for OpenAI Chat Completions, pass"
                    " stream_options={'include_usage': True}",
                    self.key,
                    self.model,
                )
        return todo

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, key={self.key!r},"
            f" charged={self.charged}, exact={self.exact}, stopped={self.stopped!r})"
        )
