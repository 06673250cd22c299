"""Default random parameters of an op, drawn once from a fixed key and reused as constants."""

from __future__ import annotations

import functools

import jax


@functools.lru_cache(maxsize=64)
def drawn_once(draw, *sizes) -> jax.Array:
    """`draw(jax.random.key(0), *sizes)`, computed eagerly once per `sizes`.

    Eager even inside jit, so a jitted step embeds a constant instead of re-drawing it (and, for
    FAVOR+, re-running a QR) on every call.
    """
    with jax.ensure_compile_time_eval():
        return draw(jax.random.key(0), *sizes)
