"""No secret in any frame local an error tracker records (issue 9, item 3).

Sentry, `pytest -l`, rich's `show_locals` and
`traceback.TracebackException(..., capture_locals=True)` print the repr of
every local of every frame an error passed through, and of the frames of its
causes. Over the fault matrix below, none of the SDK's (or httpx's) frames may
show the API key or the session token.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

from knai import AsyncKNAIProvider, KNAIError, KNAIProvider
from tests.conftest import API_KEY, TOKEN
from tests.reliability.conftest import Clients
from tests.support.rogue import Action, Close, Raw, Reply, Reset, RogueServer, Stall

pytestmark = pytest.mark.anyio
TESTS = str(Path(__file__).resolve().parents[1])
ECHO = {"error": f"bad key {API_KEY} for token {TOKEN}", "token": TOKEN, "key": API_KEY}

FAULTS: dict[str, Action] = {
    "500 echoing both": Reply(500, ECHO),
    "402 echoing both": Reply(402, ECHO),
    "401 as text": Reply(401, f"no {API_KEY} / {TOKEN}".encode(), content_type="text/plain"),
    "2xx JSON array": Reply(200, [API_KEY, TOKEN]),
    "2xx JSON string": Reply(200, f"{API_KEY} {TOKEN}"),
    "2xx failing the schema": Reply(200, {"status": 7, "session_token": TOKEN, "k": API_KEY}),
    "2xx active without a token": Reply(200, {"status": "active", "note": API_KEY}),
    "2xx not JSON": Reply(200, f"<html>{API_KEY} {TOKEN}".encode()),
    "2xx nested 600 deep": Reply(200, b"[" * 600 + f'"{TOKEN}"'.encode() + b"]" * 600),
    "no answer in time": Stall(5),
    "closed without answer": Close(),
    "reset": Reset(),
    "not HTTP": Raw(f"garbage {API_KEY}\r\n\r\n".encode()),
}


def rendered(exc: BaseException) -> str:
    """Everything capture_locals shows of `exc` and its causes, outside the test's own frames."""
    summary = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    shown: list[str] = []
    while summary is not None:
        shown.extend(summary.format_exception_only())
        for frame in summary.stack:
            if not frame.filename.startswith(TESTS):
                shown.append(f"{frame.filename}:{frame.lineno} {frame.locals!r}")
        # Every exception reachable from it, shown or not (a suppressed context too).
        summary = summary.__cause__ or summary.__context__  # type: ignore[assignment]
    return "\n".join(shown)


def fields(exc: KNAIError) -> str:
    return repr([vars(exc), exc.args, getattr(exc, "raw_body", b"")])


# A charge's payload has no required field: a schema failure is a status poll's only.
SCHEMA_FAULTS = ("2xx failing the schema", "2xx active without a token")
CASES = [("status", fault) for fault in FAULTS] + [
    ("charge", fault) for fault in FAULTS if fault not in SCHEMA_FAULTS
]


@pytest.mark.parametrize(("endpoint", "fault"), CASES)
async def test_no_frame_local_or_error_field_shows_a_secret_under_any_fault(
    clients: Clients, fault: str, endpoint: str
) -> None:
    with RogueServer(FAULTS[fault]) as server:
        twin = clients.make(server.url, max_retries=1, timeout=0.3)
        call: Any = (
            twin.get_session("user123")
            if endpoint == "status"
            else twin.charge(TOKEN, 1500, "gpt-4")
        )
        with pytest.raises(KNAIError) as caught:
            await call
    shown = rendered(caught.value) + fields(caught.value)
    assert API_KEY not in shown
    if endpoint == "charge":  # a status poll's own secret is the key: it sends no token
        assert TOKEN not in shown


@pytest.mark.parametrize(
    "bad",
    [{"amount_tokens": 0}, {"model": " "}, {"idempotency_key": "k" * 300}, {"timeout": -1}],
)
async def test_a_refused_argument_leaves_no_token_in_frame_locals(
    clients: Clients, bad: dict[str, Any]
) -> None:
    """A ValueError for a bad amount, model, key or timeout: the token is in no SDK frame."""
    twin = clients.make("http://127.0.0.1:9")
    arguments: dict[str, Any] = {"amount_tokens": 1, "model": "gpt-4", **bad}
    with pytest.raises(ValueError, match=next(iter(bad))) as caught:
        await twin.charge(
            TOKEN, arguments.pop("amount_tokens"), arguments.pop("model"), **arguments
        )
    assert TOKEN not in rendered(caught.value)


async def test_cancelling_an_async_call_mid_request_leaves_no_secret_in_frame_locals() -> None:
    """A CancelledError's traceback starts at the SDK's driver: no httpx/h11 frame with headers."""
    shown: list[str] = []

    async def charge(provider: AsyncKNAIProvider) -> None:
        try:
            await provider.charge(TOKEN, 1500, "gpt-4")
        except asyncio.CancelledError as cancelled:
            shown.append(rendered(cancelled))
            raise

    with RogueServer(Stall(10)) as server:
        async with AsyncKNAIProvider(API_KEY, "acme-ai", server.url, timeout=30) as provider:
            task = asyncio.create_task(charge(provider))
            assert await asyncio.to_thread(server.wait_until, lambda: server.count == 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert "knai/_transport.py" in shown[0], "the driver's frame is still shown"
    assert "httpcore" not in shown[0], "no frame below the driver"
    assert API_KEY not in shown[0]
    assert TOKEN not in shown[0]


def test_ctrl_c_mid_request_leaves_no_secret_in_frame_locals() -> None:
    """A KeyboardInterrupt (Ctrl-C) while a sync call waits for its answer: the same."""
    with (
        RogueServer(Stall(10)) as server,
        KNAIProvider(API_KEY, "acme-ai", server.url, timeout=30) as provider,
    ):
        main = threading.main_thread().ident
        assert main == threading.get_ident(), "the signal must reach this thread"

        def interrupt() -> None:
            if server.wait_until(lambda: server.count == 1):
                signal.pthread_kill(main, signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt) as caught:
            provider.charge(TOKEN, 1500, "gpt-4")
    shown = rendered(caught.value)
    assert "knai/_transport.py" in shown
    assert "httpcore" not in shown, "no frame below the driver"
    assert API_KEY not in shown
    assert TOKEN not in shown
