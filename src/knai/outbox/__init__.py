"""A durable charge outbox: charges survive wallet outages and process crashes.

`Outbox` (over a `KNAIProvider`) and `AsyncOutbox` (over an
`AsyncKNAIProvider`) commit each charge to a store before `charge()` returns;
a background sender delivers it with its one idempotency key until the wallet
settles it::

    from knai.outbox import Outbox

    with Outbox(provider, "/var/lib/acme/charges.db") as outbox:
        outbox.charge(token, 1500, "gpt-4", idempotency_key=request_id)

The store is a SQLite file path, or a ``postgresql://`` URL with the
``knai-provider[postgres]`` extra. `import knai` does not import this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._aoutbox import AsyncOutbox
    from ._entry import DeliveryError, OutboxEntry, OutboxStats, State
    from ._open import open_store
    from ._outbox import Outbox
    from ._postgres import PostgresStore
    from ._sqlite import SQLiteStore
    from ._store import Store

__all__ = [
    "AsyncOutbox",
    "DeliveryError",
    "Outbox",
    "OutboxEntry",
    "OutboxStats",
    "PostgresStore",
    "SQLiteStore",
    "State",
    "Store",
    "open_store",
]

_MODULE_OF = {
    "AsyncOutbox": "._aoutbox",
    "DeliveryError": "._entry",
    "OutboxEntry": "._entry",
    "OutboxStats": "._entry",
    "State": "._entry",
    "open_store": "._open",
    "Outbox": "._outbox",
    "PostgresStore": "._postgres",
    "SQLiteStore": "._sqlite",
    "Store": "._store",
}


# Defined only at run time: to a type checker this package has exactly the names
# imported above, so a misspelt `from knai.outbox import Outbx` is an error.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        # PostgresStore needs psycopg: load each name's module only when asked for.
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(__all__)
