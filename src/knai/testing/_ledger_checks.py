"""Argument checks of the sandbox ledger: a clear ``ValueError`` naming the argument."""

from __future__ import annotations

import math


def check_text(name: str, value: object) -> None:
    """Refuse anything but a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def check_int(name: str, value: object, *, minimum: int) -> None:
    """Refuse a bool, a non-int, or an int below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}")


def check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    """Refuse a non-number, NaN, infinity, a negative, or zero unless allowed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}")
