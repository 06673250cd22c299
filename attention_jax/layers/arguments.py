"""Checks of the layers' constructor arguments, so a bad value fails where it was given.

Layers are built directly in Python as well as from checked configs; unchecked, a float head
count fails deep inside jax and a dropout rate of 1.5 trains without complaint.
"""

from __future__ import annotations

import numbers

from attention_jax.ops import contract


def positive_int(owner: str, name: str, value) -> int:
    """`value` as an int if it is an integer >= 1; a ValueError naming owner and name if not."""
    return contract.static_int(owner, name, value)


def dropout_rate(owner: str, value) -> float:
    """`value` as a float if it is a probability in [0, 1); a ValueError if not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(
            f"{owner}: dropout_rate must be a number in [0, 1) (the fraction dropped); got "
            f"{value!r}."
        )
    return float(value)
