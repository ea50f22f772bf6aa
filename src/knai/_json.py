"""The type of a decoded JSON value, as `json.loads` returns it."""

from typing import TypeAlias

__all__ = ["JSONValue"]

JSONValue: TypeAlias = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None
"""Any value `json.loads` returns: the type of `KNAIError.response_body`."""
