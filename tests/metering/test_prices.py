"""`Price` and `PriceTable`: exact rates, rounding up once, pattern lookup, price files."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from knai.metering import Price, PriceTable, Usage


def test_rates_are_exact_whatever_their_spelling() -> None:
    """0.1 as a float, a string, a Decimal and a Fraction are all exactly one tenth."""
    for rate in (0.1, "0.1", Decimal("0.1"), Fraction(1, 10)):
        assert Price(rate, rate).input == Fraction(1, 10)
    # Ten thousand tokens at 0.1 cost 1000 exactly, not 1000.0000000000001 -> 1001.
    assert Price(0.1, 0.1).amount(Usage(input_tokens=10_000)) == 1000


def test_cache_rates_default_to_the_input_rate() -> None:
    price = Price(3, 15)
    assert price.cached_input == price.cache_write == 3


def test_each_part_is_priced_at_its_own_rate_and_rounded_up_once() -> None:
    price = Price("2.5", 10, cached_input="1.25", cache_write="3.125")
    usage = Usage(input_tokens=3, cached_input_tokens=3, cache_write_tokens=1, output_tokens=1)
    # 7.5 + 3.75 + 3.125 + 10 = 24.375: one rounding, up, to 25 (per part would give 26).
    assert price.cost(usage) == Fraction("24.375")
    assert price.amount(usage) == 25
    assert price.amount(Usage()) == 0


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((-1, 1), ValueError, "input"),
        ((1, float("nan")), ValueError, "output"),
        ((1, 1, "inf"), ValueError, "cached_input"),
        ((1, 1, None, "abc"), ValueError, "cache_write"),
        ((True, 1), TypeError, "input"),
        ((1, [1]), TypeError, "output"),
    ],
)
def test_bad_rates_are_refused_by_name(
    args: tuple[Any, ...], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        Price(*args)


def test_an_exact_id_wins_then_the_longest_pattern_then_the_default() -> None:
    table = PriceTable(
        {
            "gpt-4o*": Price(3, 12),
            "gpt-4o-mini*": Price("0.2", "0.8"),
            "gpt-4o-2024-08-06": Price("2.5", 10),
        },
        default=Price(7, 7),
    )
    assert table.price("gpt-4o-2024-08-06") == Price("2.5", 10)
    assert table.price("gpt-4o-2024-11-20") == Price(3, 12)
    assert table.price("gpt-4o-mini-2024-07-18") == Price("0.2", "0.8")
    assert table.price("o3") == Price(7, 7)
    assert table.amount("gpt-4o-mini", Usage(input_tokens=10, output_tokens=10)) == 10


def test_a_star_pattern_prices_every_model() -> None:
    table = PriceTable({"*": Price(2, 2), "claude*": Price(1, 1)}, default=None)
    assert table.price("anything") == Price(2, 2)
    assert table.price("claude-sonnet-4") == Price(1, 1)


def test_a_table_without_default_refuses_unknown_models() -> None:
    table = PriceTable({"gpt-4o*": Price(1, 1)}, default=None)
    with pytest.raises(ValueError, match="o3"):
        table.amount("o3", Usage(1))


def test_the_default_table_charges_one_wallet_token_per_model_token() -> None:
    assert PriceTable().amount("any-model", Usage(3, 2, 1, 4)) == 10


def test_prices_may_be_given_as_mappings_of_rates() -> None:
    table = PriceTable({"m": {"input": "0.5", "output": 2, "cached_input": 0}})
    assert table.price("m") == Price("0.5", 2, cached_input=0)
    with pytest.raises(ValueError, match="unknown rates: outptu"):
        PriceTable({"m": {"input": 1, "outptu": 2}})
    with pytest.raises(ValueError, match="'output'"):
        PriceTable({"m": {"input": 1}})


TOML = """\
["gpt-4o*"]
input = 2.5
output = 10
cached_input = "1.25"

["claude-sonnet-4*"]
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib; 3.10 uses the toml extra")
def test_a_toml_price_file_reads_exactly(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TOML)
    table = PriceTable.from_file(path, default=None)
    assert table.price("claude-sonnet-4-20250514") == Price(3, 15, "0.3", "3.75")
    assert table.price("gpt-4o") == Price("2.5", 10, "1.25")
    # 0.3 read as a Decimal, not the float 0.299999...: 10 cached tokens cost exactly 3.
    assert table.amount("claude-sonnet-4", Usage(cached_input_tokens=10)) == 3


def test_a_json_price_file_reads_exactly(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"o3*": {"input": 2, "output": 8, "cached_input": 0.5}}))
    table = PriceTable.from_file(str(path))
    assert table.price("o3-2025-04-16") == Price(2, 8, "0.5")
    assert table.price("other") == Price(1, 1)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("prices.yaml", "a: 1", "must end in .toml or .json"),
        ("prices.json", "{not json", "not valid JSON"),
        ("prices.toml", "[unclosed", "not valid TOML"),
        ("prices.json", "[1, 2]", "table of model ids"),
        ("prices.json", '{"m": 3}', "'m' must be a table"),
        ("prices.json", '{"m": {"input": -1, "output": 1}}', r"prices\['m'\]: input"),
    ],
)
def test_a_bad_price_file_is_a_value_error_naming_it(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        PriceTable.from_file(path)


def test_toml_without_tomllib_or_tomli_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.10 has no tomllib: without tomli the error names the `toml` extra."""
    path = tmp_path / "prices.toml"
    path.write_text(TOML)
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    monkeypatch.setitem(sys.modules, "tomli", None)  # makes `import tomli` fail
    with pytest.raises(ValueError, match=r"knai-provider\[toml\]"):
        PriceTable.from_file(path)


def test_pricing_anything_but_a_usage_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="usage_of"):
        PriceTable().amount("m", {"prompt_tokens": 3})  # type: ignore[arg-type]
