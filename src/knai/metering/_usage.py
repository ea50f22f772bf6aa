"""`Usage`: token counts split into disjoint parts, so each part is priced once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage"]


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one model call consumed, in model tokens.

    The input parts are disjoint, so a price applies to each token once; this
    is where providers differ (OpenAI's `prompt_tokens` include the cached
    tokens, Anthropic's `input_tokens` exclude them), and `usage_of` does the
    splitting.

    Attributes:
        input_tokens: Input read neither from nor into a cache.
        cached_input_tokens: Input read from a prompt cache.
        cache_write_tokens: Input written to a prompt cache.
        output_tokens: All output, reasoning included.
        reasoning_tokens: The part of `output_tokens` spent on reasoning (for
            information: it is priced as output).

    Raises:
        TypeError: A count is not an int.
        ValueError: A count is negative, or `reasoning_tokens` exceeds
            `output_tokens`.

    Example:
        >>> Usage(input_tokens=10, output_tokens=5) + Usage(cached_input_tokens=90)
        Usage(input_tokens=10, cached_input_tokens=90, cache_write_tokens=0, output_tokens=5, reasoning_tokens=0)
    """  # noqa: E501

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for name in (
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
        ):
            _check_count(name, getattr(self, name))
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) cannot exceed"
                f" output_tokens ({self.output_tokens})"
            )

    @property
    def total_input_tokens(self) -> int:
        """All input: uncached, cache reads and cache writes."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )
