"""`Price` and `PriceTable`: exact wallet-token prices per model token."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import TYPE_CHECKING, cast

from ._usage import Usage

if TYPE_CHECKING:
    import os

__all__ = ["Price", "PriceLike", "PriceTable", "Rate"]

Rate = int | float | str | Decimal | Fraction
"""A price per model token: exact (int, Decimal, Fraction, decimal string) or a float."""


def exact(name: str, value: object) -> Fraction:
    """`value` as an exact, finite, non-negative Fraction; floats through their repr."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not bool")
    try:
        if isinstance(value, float):
            # repr(0.1) == "0.1": the number the user wrote, not its binary neighbour.
            result = Fraction(Decimal(repr(value)))
        elif isinstance(value, int | Fraction):
            result = Fraction(value)
        elif isinstance(value, Decimal | str):
            result = Fraction(Decimal(value.strip()) if isinstance(value, str) else value)
        else:
            raise TypeError(
                f"{name} must be an int, Decimal, Fraction, decimal string or float,"
                f" not {type(value).__name__}"
            )
    except (ValueError, InvalidOperation, OverflowError, ZeroDivisionError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return result


@dataclass(frozen=True, slots=True, init=False)
class Price:
    """Wallet tokens charged per model token, by kind of token.

    Every rate is kept exact; a float is read through its repr (`0.1` is one
    tenth, not 0.1000000000000000055...). The cache rates default to `input`.

    Args:
        input: Per uncached input token.
        output: Per output token (reasoning included).
        cached_input: Per input token read from a cache (default: `input`).
        cache_write: Per input token written to a cache (default: `input`).

    Raises:
        TypeError: A rate is not a number.
        ValueError: A rate is negative, infinite or not a number.

    Example:
        >>> Price("2.5", 10, cached_input="1.25").amount(Usage(1000, 3000, 0, 500))
        11250
    """

    input: Fraction
    output: Fraction
    cached_input: Fraction
    cache_write: Fraction
    _scaled: tuple[int, int, int, int, int] = field(repr=False, compare=False)

    def __init__(
        self,
        input: Rate,
        output: Rate,
        cached_input: Rate | None = None,
        cache_write: Rate | None = None,
    ) -> None:
        rate_in = exact("input", input)
        rate_out = exact("output", output)
        rate_cached = rate_in if cached_input is None else exact("cached_input", cached_input)
        rate_write = rate_in if cache_write is None else exact("cache_write", cache_write)
        object.__setattr__(self, "input", rate_in)
        object.__setattr__(self, "output", rate_out)
        object.__setattr__(self, "cached_input", rate_cached)
        object.__setattr__(self, "cache_write", rate_write)
        # One common denominator turns pricing into integer arithmetic, which
        # is what lets a metered stream check "is a charge due?" per chunk cheaply.
        rates = (rate_in, rate_cached, rate_write, rate_out)
        denominator = math.lcm(*(r.denominator for r in rates))
        scaled = tuple(r.numerator * (denominator // r.denominator) for r in rates)
        object.__setattr__(self, "_scaled", (denominator, *scaled))

    def cost(self, usage: Usage) -> Fraction:
        """The exact price of `usage`, in wallet tokens (not rounded)."""
        denominator, *_ = self._scaled
        return Fraction(self.scaled(usage), denominator)

    def scaled(self, usage: Usage) -> int:
        """`cost(usage)` times `self.denominator`: an int."""
        # Untyped callers pass anything: the annotation is checked at run time.
        if not isinstance(cast(object, usage), Usage):
            raise TypeError(f"usage must be a Usage (see usage_of), not {type(usage).__name__}")
        _, rate_in, rate_cached, rate_write, rate_out = self._scaled
        return (
            usage.input_tokens * rate_in
            + usage.cached_input_tokens * rate_cached
            + usage.cache_write_tokens * rate_write
            + usage.output_tokens * rate_out
        )

    @property
    def denominator(self) -> int:
        """The least common denominator of the four rates."""
        return self._scaled[0]

    def amount(self, usage: Usage) -> int:
        """`cost(usage)` rounded up to whole wallet tokens."""
        return -(-self.scaled(usage) // self._scaled[0])


PriceLike = Price | Mapping[str, Rate]
"""A `Price`, or a mapping of its argument names to rates."""


def as_price(name: str, value: object) -> Price:
    """`value` as a Price: a Price, or a mapping with `input`, `output` and optional cache rates."""
    if isinstance(value, Price):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a Price or a mapping of rates")
    # Keys are checked below and rates by Price itself, so the mapping is only
    # assumed to be what the checks then prove.
    rates = cast("Mapping[str, Rate]", value)
    unknown = set(rates) - {"input", "output", "cached_input", "cache_write"}
    if unknown:
        raise ValueError(f"{name} has unknown rates: {', '.join(sorted(map(str, unknown)))}")
    for required in ("input", "output"):
        if required not in rates:
            raise ValueError(f"{name} needs an {required!r} rate")
    try:
        return Price(**rates)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


class PriceTable:
    """Prices by model id: an exact id first, then the longest `prefix*` pattern.

    Args:
        prices: Model id or pattern (ending in `*`, e.g. `"gpt-4o*"`) to a
            `Price` or a mapping of its rates.
        default: The price of a model nothing matches; None to refuse such
            models with a `ValueError`.

    Raises:
        TypeError, ValueError: A key is not a non-empty string, or a price is malformed.

    Example:
        >>> table = PriceTable({"gpt-4o*": Price(3, 12), "gpt-4o-mini*": Price("0.2", "0.8")})
        >>> table.price("gpt-4o-mini-2024-07-18") == Price("0.2", "0.8")
        True
    """

    __slots__ = ("_cache", "_exact", "_patterns", "default")

    default: Price | None
    """The price of a model nothing matches, or None."""

    def __init__(
        self,
        prices: Mapping[str, PriceLike] | None = None,
        default: Price | None = Price(1, 1),
    ) -> None:
        # Untyped callers pass anything: the annotations are checked at run time.
        if default is not None and not isinstance(cast(object, default), Price):
            raise TypeError("default must be a Price or None")
        self.default = default
        self._exact: dict[str, Price] = {}
        patterns: list[tuple[str, Price]] = []
        for key, value in (prices or {}).items():
            if not isinstance(cast(object, key), str) or not key:
                raise TypeError(f"prices keys must be non-empty model ids, got {key!r}")
            price = as_price(f"prices[{key!r}]", value)
            if key.endswith("*"):
                patterns.append((key[:-1], price))
            else:
                self._exact[key] = price
        patterns.sort(key=lambda pattern: len(pattern[0]), reverse=True)
        self._patterns = tuple(patterns)
        self._cache: dict[str, Price | None] = {}

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], default: Price | None = Price(1, 1)
    ) -> PriceTable:
        """Read a table from a `.toml` or `.json` file; see `knai.metering` for the format."""
        from ._price_file import load_prices

        return cls(load_prices(path), default=default)

    def lookup(self, model: str) -> Price | None:
        """The price of `model`, or None when nothing matches and there is no default."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self._exact.get(model)
        if price is None:
            price = next((p for prefix, p in self._patterns if model.startswith(prefix)), None)
        if price is None:
            price = self.default
        if len(self._cache) < 4096:  # bounded: model ids may come from requests
            self._cache[model] = price
        return price

    def price(self, model: str) -> Price:
        """The price of `model`.

        Raises:
            ValueError: Nothing matches `model` and the table has no default.
        """
        # Untyped callers pass anything: the annotation is checked at run time.
        if not isinstance(cast(object, model), str) or not model:
            raise ValueError("model must be a non-empty string")
        price = self.lookup(model)
        if price is None:
            raise ValueError(f"no price for model {model!r} and the table has no default")
        return price

    def amount(self, model: str, usage: Usage) -> int:
        """The wallet tokens to charge for `usage` of `model`, rounded up once."""
        return self.price(model).amount(usage)

    def __repr__(self) -> str:
        return (
            f"PriceTable({len(self._exact)} models, {len(self._patterns)} patterns,"
            f" default={self.default!r})"
        )
