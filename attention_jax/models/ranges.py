"""The values a numeric config field allows, and one-line errors naming the field outside them.

Shared by the model, optimizer and run configs, so every range reads and fails the same way.
"""

import dataclasses
import math
import numbers
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric config field allows; `str()` states them as errors print them."""

    low: float
    high: float = math.inf
    integer: bool = False
    open_low: bool = False  # (low, ... rather than [low, ...
    closed_high: bool = False  # ..., high] rather than ..., high)
    optional: bool = False  # None allowed too

    def __contains__(self, value) -> bool:
        if value is None:
            return self.optional
        # bool is an int to Python, but True heads or steps is a slip, never a number.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        # Integers are finite (and math.isfinite overflows on huge ones); floats may be nan.
        if not isinstance(value, numbers.Integral) and (self.integer or not math.isfinite(value)):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value <= self.high if self.closed_high else value < self.high
        return above and below

    def __str__(self) -> str:
        low = _number(self.low)
        if math.isinf(self.high):
            text = f"{'>' if self.open_low else '>='} {low}"
        else:
            brackets = "(" if self.open_low else "[", "]" if self.closed_high else ")"
            text = f"in {brackets[0]}{low}, {_number(self.high)}{brackets[1]}"
        if self.integer:
            text += " (an integer)"
        elif math.isinf(self.high):
            text += " and finite"
        return f"{text}, or None" if self.optional else text


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


POSITIVE_INT = Range(1, integer=True)
POSITIVE_INT_OR_NONE = Range(1, integer=True, optional=True)


def check_ranges(where: str, config, ranges: Mapping[str, Range]) -> None:
    """Raises a one-line ValueError naming the first field of `config` outside its range."""
    for name, allowed in ranges.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ValueError(f"{where}{name} must be {allowed}; got {value!r}.")
