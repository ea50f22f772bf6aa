"""Price files: TOML or JSON tables of model id (or pattern) to rates.

    ["gpt-4o*"]
    input = "2.5"
    output = 10
    cached_input = "1.25"

    ["claude-sonnet-4*"]
    input = 3
    output = 15
    cached_input = "0.3"
    cache_write = "3.75"

JSON is the same table as an object. Numbers with a fraction are read as
`Decimal`, never as binary floats; a `"*"` entry prices every other model.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

__all__ = ["load_prices"]


def _toml_loader() -> Callable[..., dict[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.load
    try:
        # Through importlib: tomli is optional, so type checkers may not have it.
        tomli = importlib.import_module("tomli")
    except ImportError:
        raise ValueError(
            "reading a TOML price file on Python 3.10 needs the tomli package:"
            " pip install 'knai-provider[toml]' (or use a .json file)"
        ) from None
    load: Callable[..., dict[str, Any]] = tomli.load
    return load


def _read(path: Path) -> object:
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            with path.open(encoding="utf-8") as text:
                return json.load(text, parse_float=Decimal)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"price file {path} is not valid JSON: {exc}") from None
    if suffix != ".toml":
        raise ValueError(f"price file {path} must end in .toml or .json")
    load = _toml_loader()
    try:
        with path.open("rb") as binary:
            return load(binary, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
        raise ValueError(f"price file {path} is not valid TOML: {exc}") from None


def load_prices(path: str | os.PathLike[str]) -> dict[str, Mapping[str, Any]]:
    """The model-to-rates table a price file holds.

    Raises:
        ValueError: The file is not TOML/JSON, or not a table of tables.
        OSError: The file cannot be read.
    """
    # Untyped callers pass anything: the annotation is checked at run time.
    if not isinstance(cast(object, path), str | os.PathLike):
        raise TypeError("path must be a str or os.PathLike")
    file = Path(path)
    data = _read(file)
    if not isinstance(data, dict):
        raise ValueError(f"price file {file} must hold a table of model ids to rates")
    # A JSON object's and a TOML table's keys are strings; the rates are
    # checked by PriceTable.
    table = cast("dict[str, object]", data)
    for model, rates in table.items():
        if not isinstance(rates, dict):
            raise ValueError(f"price file {file}: {model!r} must be a table of rates")
    return cast("dict[str, Mapping[str, Any]]", table)
