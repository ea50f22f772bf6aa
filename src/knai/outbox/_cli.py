"""`knai outbox status|drain|dead|retry`: inspect and operate an outbox store (JSON output).

    knai outbox status --store charges.db
    knai outbox dead   --store postgresql://... --table knai_outbox
    knai outbox retry KEY --store charges.db [--new-session]   (token: $KNAI_SESSION_TOKEN)
    knai outbox drain  --store charges.db --timeout 30          (credentials: $KNAI_API_KEY ...)

`status`, `dead` and `retry` only touch the store; a running sender picks a
retried charge up at its next poll. `drain` delivers with a provider built
from the usual flags and variables, and exits 1 if charges are still pending.
The store can also come from $KNAI_OUTBOX_STORE.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["add_parser", "run"]


class _Subparsers(Protocol):
    """What `add_parser` needs of ``ArgumentParser.add_subparsers()``'s (private) action type."""

    def add_parser(self, name: str, *, help: str | None = ...) -> argparse.ArgumentParser: ...


def add_parser(subparsers: _Subparsers) -> argparse.ArgumentParser:
    """Add the `outbox` command to the `knai` command's subparsers."""
    outbox = subparsers.add_parser("outbox", help="inspect and operate a charge outbox")
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = actions.add_parser(name, help=help_text)
        cmd.add_argument(
            "--store", help="SQLite file or postgresql:// URL (default: $KNAI_OUTBOX_STORE)"
        )
        cmd.add_argument("--table", help="PostgreSQL table (default knai_outbox)")
        return cmd

    action("status", "counts of pending, sent and dead charges")
    dead = action("dead", "the dead list: refused charges with their errors")
    dead.add_argument("--limit", type=int, default=None, help="at most this many, oldest first")
    retry = action("retry", "resend a dead charge under a derived key")
    retry.add_argument("idempotency_key")
    retry.add_argument(
        "--new-session",
        action="store_true",
        help="send with the token in $KNAI_SESSION_TOKEN (the old session ended)",
    )
    drain = action("drain", "deliver pending charges now (needs provider credentials)")
    drain.add_argument("--timeout", type=float, default=30.0, help="give up after seconds")
    drain.add_argument("--base-url", help="API base URL (default: $KNAI_BASE_URL or production)")
    drain.add_argument("--slug", help="provider slug (default: $KNAI_PROVIDER_SLUG)")
    return outbox


def _store(args: argparse.Namespace) -> Any:
    from ._open import open_store

    location = args.store or os.environ.get("KNAI_OUTBOX_STORE")
    if not location:
        raise ValueError("store is required: pass --store or set KNAI_OUTBOX_STORE")
    is_url = location.startswith(("postgresql://", "postgres://"))
    if args.table and not is_url:
        raise ValueError("--table is for a postgresql:// store")
    return open_store(location, **({"table": args.table} if args.table else {}))


def run(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]) -> int:
    """Run one `knai outbox` action; `emit` prints its JSON document. Returns the exit code."""
    store = _store(args)
    try:
        if args.outbox_command == "status":
            emit({"ok": True, "result": store.stats().to_dict()})
            return 0
        if args.outbox_command == "dead":
            entries = store.entries("dead", args.limit)
            emit({"ok": True, "result": [e.to_dict() for e in entries]})
            return 0
        if args.outbox_command == "retry":
            return _retry(store, args, emit)
        return _drain(store, args, emit)
    finally:
        store.close()


def _retry(store: Any, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]) -> int:
    token = None
    if args.new_session:
        token = os.environ.get("KNAI_SESSION_TOKEN")
        if not token:
            raise ValueError("--new-session needs the new session's token in KNAI_SESSION_TOKEN")
    try:
        entry = store.retry_dead(args.idempotency_key, token)
    except KeyError:
        raise ValueError(
            f"idempotency_key: no charge {args.idempotency_key!r} in the outbox"
        ) from None
    emit({"ok": True, "result": entry.to_dict()})
    return 0


def _drain(store: Any, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]) -> int:
    from knai import KNAIProvider

    from ._outbox import Outbox

    with KNAIProvider(provider_slug=args.slug, base_url=args.base_url) as provider:
        outbox = Outbox(provider, store, poll_interval=0.2, drain_timeout=0)
        drained = outbox.drain(args.timeout)
        outbox.stop(0)
        stats = outbox.stats()
    emit({"ok": drained, "result": {"drained": drained, **stats.to_dict()}})
    return 0 if drained else 1
