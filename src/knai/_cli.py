"""The `knai` command: the demo, the sandbox server, and operator subcommands.

    knai demo                      the README flow against an embedded sandbox
    knai sandbox --port 8750       serve the sandbox wallet in the foreground
    knai session USER              one status poll (JSON)
    knai wait USER --wait-timeout 60  wait for an active session (JSON)
    knai charge --amount N --model M [--idempotency-key K]

The API key comes from KNAI_API_KEY only (a flag would leave it in shell history
and process lists); the slug from --slug or KNAI_PROVIDER_SLUG, the base URL
from --base-url or KNAI_BASE_URL, the session token for `charge` from
KNAI_SESSION_TOKEN. Results are JSON on stdout with secrets redacted; errors are
JSON on stderr, naming the flag or variable at fault, with an exit code per
error class (see `knai --help`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import errors
from ._redact import _redacted
from ._version import __version__

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

_CREDENTIALS = (
    "credentials: the API key from $KNAI_API_KEY (never a flag: it would stay in shell"
    " history and process lists), the slug from --slug or $KNAI_PROVIDER_SLUG, the base URL"
    " from --base-url or $KNAI_BASE_URL (default https://api.conx.ai)"
)
_SANDBOX_CREDENTIALS = (
    "credentials: none needed; the sandbox's demo provider key is built in and"
    " $KNAI_API_KEY is not read"
)
_EPILOG = (
    _CREDENTIALS
    + "; charge's session token from $KNAI_SESSION_TOKEN.\n\nexit codes: 0 ok, "
    + ", ".join(f"{code} {cls.__name__}" for cls, code in EXIT_CODES)
)
_T = TypeVar("_T")


def _checked(convert: Callable[[str], _T], ok: Callable[[_T], bool], wanted: str) -> Any:
    """An argparse `type` that converts, then refuses values outside `wanted`."""

    def parse(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


_port = _checked(int, lambda v: 0 <= v <= 65535, "a port number from 0 to 65535")
_seconds = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number of seconds")
_retries = _checked(int, lambda v: v >= 0, "an integer >= 0")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knai",
        description="KNAI Wallet SDK for providers: demo, sandbox and operator commands.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"knai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="walk through the README flow against a sandbox wallet",
        epilog=_SANDBOX_CREDENTIALS,
    )
    demo.add_argument(
        "--base-url", help="use an already running sandbox at this URL instead of an embedded one"
    )

    sandbox = sub.add_parser(
        "sandbox", help="serve the sandbox wallet in the foreground", epilog=_SANDBOX_CREDENTIALS
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    sandbox.add_argument("--port", type=_port, default=8750, help="port (default 8750; 0 = any)")
    sandbox.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that other machines reach (0.0.0.0, say): the sandbox has no"
        " authentication, so only on a trusted network such as a container's",
    )

    def api_command(name: str, help_text: str, epilog: str = "") -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, epilog=_CREDENTIALS + epilog)
        cmd.add_argument("--base-url", help="API base URL (default: $KNAI_BASE_URL or production)")
        cmd.add_argument("--slug", help="provider slug (default: $KNAI_PROVIDER_SLUG)")
        cmd.add_argument("--timeout", type=_seconds, help="per-request timeout in seconds")
        cmd.add_argument("--max-retries", type=_retries, help="retries of transient failures")
        return cmd

    session = api_command("session", "poll a user's session status once")
    session.add_argument("provider_username", metavar="USER", help="the provider_username")

    wait = api_command("wait", "wait until a user's session is active")
    wait.add_argument("provider_username", metavar="USER", help="the provider_username")
    wait.add_argument("--wait-timeout", type=_seconds, default=None, help="give up after seconds")
    wait.add_argument("--poll-interval", type=_seconds, default=1.5, help="seconds between polls")

    charge = api_command(
        "charge",
        "charge a session (token from $KNAI_SESSION_TOKEN)",
        "; the session token from $KNAI_SESSION_TOKEN",
    )
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
        if exc.idempotency_key is not None and exc.headers is not None:
            # A refusal (402) is recorded under its key too, and replayed as such.
            info["replayed"] = _replayed(exc.headers)
    return {"ok": False, "error": info}


def exit_code(exc: BaseException) -> int:
    """The process exit code for an error (see EXIT_CODES)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


# What the CLI calls each SDK argument, so an error names what the user typed.
_CALL_TERMS: dict[str, dict[str, str]] = {
    "session": {"provider_username": "USER"},
    "wait": {
        "provider_username": "USER",
        "timeout": "--wait-timeout",
        "poll_interval": "--poll-interval",
    },
    "charge": {
        "session_token": "KNAI_SESSION_TOKEN",
        "amount_tokens": "--amount",
        "model": "--model",
        "idempotency_key": "--idempotency-key",
    },
}


def _in_cli_terms(exc: ValueError, terms: Mapping[str, str]) -> ValueError:
    """The same error with each SDK argument name (`timeout`, `model=`) replaced by its flag."""
    message = str(exc)
    for name, term in terms.items():
        message = re.sub(rf"(?<![\w$-]){re.escape(name)}=?(?!\w)", term, message)
    return ValueError(message)


def _client_terms(args: argparse.Namespace) -> dict[str, str]:
    return {
        "provider_api_key": "KNAI_API_KEY",
        "provider_slug": "--slug" if args.slug else "KNAI_PROVIDER_SLUG",
        "base_url": "--base-url" if args.base_url else "KNAI_BASE_URL",
        "timeout": "--timeout",
        "max_retries": "--max-retries",
    }


def _required_env(variable: str, what: str, flag: str | None = None) -> str:
    # Stripped as the SDK strips what it reads itself: env files end lines with CR or a tab.
    value = os.environ.get(variable, "").strip()
    if not value:
        alternative = f"pass {flag} or " if flag else ""
        raise ValueError(f"{variable} is not set: {alternative}export {what} as {variable}")
    return value


def _replayed(headers: Mapping[str, str]) -> bool:
    """True when the wallet says it answered from an earlier charge with the same key.

    The sandbox says so with `Idempotent-Replayed: true`; the real API's signal is
    not documented, so there a replay the wallet does not flag reads as False.
    """
    return str(headers.get("idempotent-replayed", "")).lower() == "true"


def _run_api(args: argparse.Namespace) -> dict[str, Any]:
    from ._client import KNAIProvider

    options: dict[str, Any] = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.max_retries is not None:
        options["max_retries"] = args.max_retries
    try:
        api_key = _required_env("KNAI_API_KEY", "your provider API key")
        slug = args.slug or _required_env("KNAI_PROVIDER_SLUG", "your provider slug", "--slug")
        provider = KNAIProvider(api_key, slug, base_url=args.base_url, **options)
    except ValueError as exc:
        raise _in_cli_terms(exc, _client_terms(args)) from exc
    with provider:
        result: Session | ChargeResult
        try:
            if args.command == "session":
                result = provider.get_session(args.provider_username)
            elif args.command == "wait":
                result = provider.wait_for_session(
                    args.provider_username, args.poll_interval, timeout=args.wait_timeout
                )
            else:
                token = _required_env("KNAI_SESSION_TOKEN", "the session token to charge")
                result = provider.charge(
                    token, args.amount, args.model, idempotency_key=args.idempotency_key
                )
        except ValueError as exc:
            raise _in_cli_terms(exc, _CALL_TERMS[args.command]) from exc
    document: dict[str, Any] = {
        "ok": True,
        "result": result.to_dict(),
        "request_id": result.meta.request_id,
        "idempotency_key": result.meta.idempotency_key,
        "retries": result.meta.retries,
    }
    if args.command == "charge":
        document["replayed"] = _replayed(result.meta.headers)
        if document["replayed"]:
            print(
                f"knai charge: replayed: Idempotency-Key {result.meta.idempotency_key} was"
                " charged before; the wallet returned that charge and debited nothing more",
                file=sys.stderr,
            )
    return document


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_sandbox(host: str, port: int, allow_remote: bool) -> int:
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

    if allow_remote and not _is_loopback(host):
        print(
            f"knai sandbox: WARNING: serving on {host}, which other machines may reach; the"
            " sandbox has no authentication (anyone who reaches it can create wallets and read"
            " session tokens): use it only on a trusted network",
            file=sys.stderr,
            flush=True,
        )
    try:
        run_forever(host=host, port=port, on_ready=ready, allow_remote=allow_remote)
    except ValueError as exc:
        print(
            f"knai sandbox: {exc}".replace(
                "allow_remote=True (knai sandbox --allow-remote)", "--allow-remote"
            ),
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(
            f"knai sandbox: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


def _run_demo(base_url: str | None) -> int:
    import httpx

    from ._args import check_base_url
    from .testing._admin import SandboxAdminError
    from .testing._demo import NoSandboxError, run_demo

    if base_url is not None:
        try:
            base_url = check_base_url(base_url)
        except ValueError as exc:
            raise _in_cli_terms(exc, {"base_url": "--base-url"}) from exc
    try:
        return run_demo(base_url)
    except (NoSandboxError, SandboxAdminError, httpx.HTTPError, errors.KNAIError) as exc:
        # One line, not a traceback: the wallet at --base-url is missing or misbehaved.
        print(f"knai demo: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `knai` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command in ("demo", "sandbox"):
            from .testing._extra import EXTRA_MODULES, INSTALL_HINT

            # Only serving needs the extra: a demo against --base-url is httpx alone
            # (without the extra it skips the paid chat service, which fastapi serves).
            serves = args.command == "sandbox" or args.base_url is None
            needed = (*EXTRA_MODULES, "fastapi") if args.command == "demo" else EXTRA_MODULES
            missing = [m for m in needed if serves and importlib.util.find_spec(m) is None]
            if missing:
                print(
                    f"knai {args.command} needs the sandbox extra ({', '.join(missing)} missing):"
                    f" {INSTALL_HINT}",
                    file=sys.stderr,
                )
                return 1
            if args.command == "demo":
                return _run_demo(args.base_url)
            return _run_sandbox(args.host, args.port, args.allow_remote)
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
