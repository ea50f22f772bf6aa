"""Turn the `store` argument (a path, a ``postgresql://`` URL or a store) into a store."""

from __future__ import annotations

import os
from typing import Any

from ._store import Store

__all__ = ["open_store"]


def open_store(store: str | os.PathLike[str] | Store, **options: Any) -> Store:
    """A store for `store`: a filesystem path opens a `SQLiteStore`, a
    ``postgresql://`` (or ``postgres://``) URL a `PostgresStore`; a store passes through.

    Raises:
        TypeError: `store` is none of those.
        ImportError: a URL was given without the ``postgres`` extra installed.
    """
    if isinstance(store, str) and store.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return PostgresStore(store, **options)
    if isinstance(store, (str, os.PathLike)):
        from ._sqlite import SQLiteStore

        return SQLiteStore(store, **options)
    return _as_store(store)


def _as_store(store: object) -> Store:
    # `store` is typed, but an untyped caller may pass anything: checked at run time.
    if isinstance(store, Store):
        return store
    raise TypeError(
        f"store must be a file path, a postgresql:// URL or a store, not {type(store).__name__}"
    )
