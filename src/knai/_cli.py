"""The `knai` command: the demo, the sandbox server, and operator subcommands.

    knai demo                      the README flow against an embedded sandbox
    knai sandbox --port 8750       serve the sandbox wallet in the foreground
    knai session USER              one status poll (JSON)
    knai wait USER --wait-timeout 60  wait for an active session (JSON)
    knai charge --amount N --model M [--idempotency-key K]

Credentials come from KNAI_API_KEY, KNAI_PROVIDER_SLUG and KNAI_BASE_URL (or
the flags); the session token for `charge` from KNAI_SESSION_TOKEN. Results
are JSON on stdout with secrets redacted; errors are JSON on stderr, with an
exit code per error class (see `knai --help`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _errors as errors
from ._redact import _redacted

if TYPE_CHECKING:
    from ._models import ChargeResult, Session

# Most specific first: the first class an error is an instance of decides.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ValueError, 2),
    (errors.InvalidAPIKeyError, 3),
    (errors.InsufficientBalanceError, 4),
    (errors.SessionExpiredError, 5),
    (errors.SessionWaitTimeoutError, 6),
    (errors.RateLimitError, 7),
    (errors.APITimeoutError, 8),
    (errors.APIConnectionError, 9),
    (errors.ServerError, 10),
    (errors.ResponseValidationError, 11),
    (errors.KNAIError, 1),
)

_EPILOG = "exit codes: 0 ok, " + ", ".join(f"{code} {cls.__name__}" for cls, code in EXIT_CODES)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knai",
        description="KNAI Wallet SDK for providers: demo, sandbox and operator commands.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="walk through the README flow against a sandbox wallet")
    demo.add_argument(
        "--base-url", help="use an already running sandbox at this URL instead of an embedded one"
    )

    sandbox = sub.add_parser("sandbox", help="serve the sandbox wallet in the foreground")
    sandbox.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8750, help="port (default 8750; 0 = any)")

    def api_command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--base-url", help="API base URL (default: $KNAI_BASE_URL or production)")
        cmd.add_argument("--slug", help="provider slug (default: $KNAI_PROVIDER_SLUG)")
        cmd.add_argument("--timeout", type=float, help="per-request timeout in seconds")
        cmd.add_argument("--max-retries", type=int, help="retries of transient failures")
        return cmd

    session = api_command("session", "poll a user's session status once")
    session.add_argument("provider_username")

    wait = api_command("wait", "wait until a user's session is active")
    wait.add_argument("provider_username")
    wait.add_argument("--wait-timeout", type=float, default=None, help="give up after seconds")
    wait.add_argument("--poll-interval", type=float, default=1.5, help="seconds between polls")

    charge = api_command("charge", "charge a session (token from $KNAI_SESSION_TOKEN)")
    charge.add_argument("--amount", type=int, required=True, help="tokens to charge")
    charge.add_argument("--model", required=True, help="model id, e.g. gpt-4")
    charge.add_argument("--idempotency-key", help="replay-safe key (default: a new UUID)")

    from .outbox._cli import add_parser as add_outbox_parser

    add_outbox_parser(sub)
    return parser


def _emit(stream: Any, document: dict[str, Any]) -> None:
    stream.write(json.dumps(_redacted(document), indent=2, default=str) + "\n")


def _error_document(exc: BaseException) -> dict[str, Any]:
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, errors.KNAIError):
        info.update(
            status_code=exc.status_code,
            request_id=exc.request_id,
            idempotency_key=exc.idempotency_key,
            may_have_been_applied=exc.may_have_been_applied,
            attempts=exc.attempts,
        )
    return {"ok": False, "error": info}


def exit_code(exc: BaseException) -> int:
    """The process exit code for an error (see EXIT_CODES)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def _run_api(args: argparse.Namespace) -> dict[str, Any]:
    import os

    from ._client import KNAIProvider

    options: dict[str, Any] = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.max_retries is not None:
        options["max_retries"] = args.max_retries
    with KNAIProvider(provider_slug=args.slug, base_url=args.base_url, **options) as provider:
        result: Session | ChargeResult
        if args.command == "session":
            result = provider.get_session(args.provider_username)
        elif args.command == "wait":
            result = provider.wait_for_session(
                args.provider_username, args.poll_interval, timeout=args.wait_timeout
            )
        else:
            token = os.environ.get("KNAI_SESSION_TOKEN")
            if not token:
                raise ValueError("session_token is required: set KNAI_SESSION_TOKEN")
            result = provider.charge(
                token, args.amount, args.model, idempotency_key=args.idempotency_key
            )
    return {
        "ok": True,
        "result": result.to_dict(),
        "request_id": result.meta.request_id,
        "idempotency_key": result.meta.idempotency_key,
        "retries": result.meta.retries,
    }


def _run_sandbox(host: str, port: int) -> int:
    from .testing import DEMO_API_KEY, DEMO_PROVIDER_SLUG, DEMO_USERNAME, run_forever

    def ready(url: str) -> None:
        print(f"KNAI sandbox wallet listening on {url}  (Ctrl-C stops it)")
        print("demo credentials (sandbox only, not secret):")
        print(f"  export KNAI_BASE_URL={url}")
        print(f"  export KNAI_API_KEY={DEMO_API_KEY}")
        print(f"  export KNAI_PROVIDER_SLUG={DEMO_PROVIDER_SLUG}")
        print(f"wallet user {DEMO_USERNAME!r}; admin API under {url}/_sandbox/. Open a session:")
        print(
            f"  curl -s -X POST {url}/_sandbox/sessions -H 'Content-Type: application/json'"
            f' -d \'{{"slug": "{DEMO_PROVIDER_SLUG}", "provider_username": "{DEMO_USERNAME}"}}\''
        )
        print(
            "  (its session_token, as KNAI_SESSION_TOKEN, is what `knai charge` charges)",
            flush=True,
        )

    try:
        run_forever(host=host, port=port, on_ready=ready)
    except OSError as exc:
        print(
            f"knai sandbox: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `knai` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command in ("demo", "sandbox"):
            missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
            if missing:
                print(
                    f"knai {args.command} needs the sandbox extra ({', '.join(missing)} missing):"
                    ' pip install "knai-provider[sandbox]"',
                    file=sys.stderr,
                )
                return 1
            if args.command == "demo":
                from .testing._demo import run_demo

                return run_demo(args.base_url)
            return _run_sandbox(args.host, args.port)
        if args.command == "outbox":
            from .outbox._cli import run as run_outbox

            return run_outbox(args, lambda document: _emit(sys.stdout, document))
        _emit(sys.stdout, _run_api(args))
    except (ValueError, errors.KNAIError) as exc:
        _emit(sys.stderr, _error_document(exc))
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
