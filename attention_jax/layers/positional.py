"""Position information: RoPE, ALiBi, sinusoidal and learned absolute embeddings.

RoPE (Su et al. 2021) rotates query/key feature pairs by position-dependent angles, so q.k
depends on positions only through i - j. ALiBi (Press et al. 2022) adds -slope * |i - j| to the
logits, one slope per head; it is a `bias`, so it suits the kinds that accept one. Sinusoidal
(Vaswani et al. 2017) and learned embeddings are added to the token embeddings.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def apply_rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Rotates feature pairs (i, i + H/2) of x by positions * base^(-2i/H).

    Args:
      x: [B, T, N, H] queries or keys, H even.
      positions: int [B, T] or [T] token positions.
      base: wavelength base.

    Returns:
      [B, T, N, H] in x's dtype (angles computed in float32).
    """
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"apply_rope: head_dim must be even to pair features; got {head_dim}.")
    half = head_dim // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq  # [B|, T, H/2]
    angles = jnp.broadcast_to(angles, (*x.shape[:2], half))[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> jax.Array:
    """Per-head slopes [num_heads]: 2^(-8 i / n) for a power of two n, else the paper's mix."""
    if num_heads < 1:
        raise ValueError(f"alibi_slopes: num_heads must be positive; got {num_heads}.")

    def powers_of_two(n):
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = powers_of_two(closest)
    # Non-powers of two take every other slope of the next power of two for the remainder.
    slopes += powers_of_two(2 * closest)[0::2][: num_heads - closest]
    return jnp.asarray(slopes, jnp.float32)


def alibi_bias(num_heads: int, q_len: int, kv_len: int) -> jax.Array:
    """The ALiBi bias [1, num_heads, q_len, kv_len] = -slope * |i - j|, float32."""
    return alibi_bias_at(num_heads, jnp.arange(q_len), jnp.arange(kv_len))


def alibi_bias_at(num_heads: int, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """ALiBi between given positions: [1, num_heads, T, S] for int [T] and [S] (decoding)."""
    distance = jnp.abs(q_positions[:, None] - k_positions[None, :]).astype(jnp.float32)
    return (-alibi_slopes(num_heads)[:, None, None] * distance)[None]


def sinusoidal_positions(length: int, features: int, *, base: float = 10000.0) -> jax.Array:
    """[length, features]: sin on even features, cos on odd, wavelengths base^(2i/features)."""
    return sinusoidal_at(jnp.arange(length), features, base=base)


def sinusoidal_at(positions: jax.Array, features: int, *, base: float = 10000.0) -> jax.Array:
    """The sinusoidal embeddings [T, features] of int positions [T] (any position, no table)."""
    if features % 2:
        raise ValueError(f"sinusoidal_positions: features must be even; got {features}.")
    position = jnp.asarray(positions, jnp.float32)[:, None]
    inv_freq = base ** (-jnp.arange(0, features, 2, dtype=jnp.float32) / features)
    table = jnp.zeros((position.shape[0], features), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(position * inv_freq))
    return table.at[:, 1::2].set(jnp.cos(position * inv_freq))


class LearnedPositions(nnx.Module):
    """Learned absolute position embeddings added to token embeddings [B, T, D]."""

    def __init__(self, max_len: int, features: int, *, rngs: nnx.Rngs):
        self.max_len = max_len
        self.table = nnx.Param(jax.random.normal(rngs.params(), (max_len, features)) * 0.02)

    def __call__(self, x: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """x [B, T, D] plus the embeddings of `positions` (default 0..T-1)."""
        if positions is None:
            if x.shape[1] > self.max_len:
                raise ValueError(
                    f"LearnedPositions: sequence length {x.shape[1]} exceeds max_len "
                    f"{self.max_len}; build the module with a larger max_len."
                )
            return x + self.table[: x.shape[1]].astype(x.dtype)
        if not isinstance(positions, jax.core.Tracer) and (
            jnp.min(positions) < 0 or jnp.max(positions) >= self.max_len
        ):
            raise ValueError(
                f"LearnedPositions: positions must lie in [0, max_len = {self.max_len}); got "
                f"{int(jnp.min(positions))}..{int(jnp.max(positions))}."
            )
        return x + jnp.take(self.table[...], positions, axis=0).astype(x.dtype)
