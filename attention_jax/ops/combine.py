"""Exact softmax attention over a union of disjoint key sets, from each part's output and lse.

softmax over A ∪ B weights part A by exp(lse_A) and part B by exp(lse_B): merging partial
results this way is exact, so a kind can compute its pattern as several cheap passes (a band in
sequence order plus a strided set in a permuted order, say) and still equal dense attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def merge(parts) -> jax.Array:
    """Combines [(out [B, T, N, Hv], lse [B, T, N]), ...] over disjoint key sets into one output.

    Rows whose every part is empty (lse = -inf) give zeros, with zero gradient.
    """
    lses = jnp.stack([lse for _, lse in parts])
    top = lses.max(axis=0)
    shift = jnp.where(jnp.isneginf(top), 0.0, top)
    weights = jnp.exp(lses - shift)
    total = weights.sum(axis=0)
    combined = sum(w[..., None] * out for w, (out, _) in zip(weights, parts, strict=True))
    return combined / jnp.where(total > 0, total, 1.0)[..., None]
