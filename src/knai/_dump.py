"""The JSON form of a payload, and pydantic's include / exclude applied to it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

from pydantic_core import PydanticSerializationError, to_jsonable_python

__all__ = ["select", "wire_json"]


def wire_json(data: Mapping[str, object]) -> dict[str, Any]:
    """`data` as JSON types (datetimes as ISO strings), or ValueError."""
    try:
        return dict(to_jsonable_python(data))
    except PydanticSerializationError:
        raise ValueError("the payload must be JSON-serialisable") from None


def select(
    raw: dict[str, Any], include: object, exclude: object, drop_none: bool
) -> dict[str, Any]:
    """A deep copy of `raw` with pydantic's include / exclude specs applied to its keys."""
    picked: dict[str, Any] = {}
    items: dict[str, object] = raw
    for key, value in items.items():
        keep = _spec_for(include, key, everything=True)
        drop = _spec_for(exclude, key, everything=False)
        if keep is None or drop is True or (drop_none and value is None):
            continue
        nested = keep is not True or drop not in (None, False)
        if nested and isinstance(value, dict):
            inner = cast("dict[str, Any]", value)
            picked[key] = select(inner, None if keep is True else keep, drop, drop_none)
        else:
            picked[key] = copy.deepcopy(value)
    return picked


def _spec_for(spec: object, key: str, *, everything: bool) -> object:
    # pydantic passes a set of keys, or a dict of key -> True / nested spec.
    if spec is None:
        return True if everything else None
    if isinstance(spec, (set, frozenset)):
        return True if key in spec else None
    if isinstance(spec, dict):
        nested = cast("dict[object, object]", spec).get(key)
        return True if nested is ... else nested
    return True if everything else None
