"""Looking inside a model's attention: per-layer maps, attention rollout and attention span."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.layers.attention import MultiHeadAttention


def attention_maps(model: nnx.Module, *inputs, **kwargs) -> list[jax.Array]:
    """The attention map [B, N, T, S] of every MultiHeadAttention in `model`, in call order.

    Runs `model(*inputs, **kwargs)` once with map recording switched on (it costs an extra
    S-wide pass per layer), then switches it back. Kernelized kinds give their implied
    weights phi(q).phi(k) normalised per query; sparse kinds are zero off their pattern.
    """
    attention = [m for _, m in nnx.iter_graph(model) if isinstance(m, MultiHeadAttention)]
    if not attention:
        raise ValueError("attention_maps: the model has no MultiHeadAttention layer to record.")
    before = [m.record_maps for m in attention]
    for m in attention:
        m.record_maps = True
    try:
        _, captured = nnx.capture(lambda m, *a, **k: m(*a, **k), nnx.Intermediate)(
            model, *inputs, **kwargs
        )
    finally:
        for m, flag in zip(attention, before):
            m.record_maps = flag
    return jax.tree.leaves(captured)


def attention_rollout(maps: list[jax.Array]) -> jax.Array:
    """Attention rollout (Abnar & Zuidema 2020) [B, T, T] of self-attention maps [B, N, T, T].

    Each layer's head-averaged map is mixed half-and-half with the identity (the residual
    path), rows renormalised, and the layers multiplied from the first to the last: entry
    (i, j) is how much of input token j reaches position i at the top.
    """
    rollout = None
    for weights in maps:
        mixed = 0.5 * weights.mean(axis=1) + 0.5 * jnp.eye(weights.shape[-1], dtype=weights.dtype)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def mean_attention_span(weights: jax.Array) -> jax.Array:
    """Mean distance |i - j| between a query and the keys it attends to, per head: [B, N].

    Args:
      weights: [B, N, T, S] self-attention map whose rows sum to 1 (all-zero rows, such as
        padding queries, are left out of the mean).
    """
    T, S = weights.shape[-2:]
    distance = jnp.abs(jnp.arange(T)[:, None] - jnp.arange(S)[None, :]).astype(weights.dtype)
    per_query = jnp.sum(weights * distance, axis=-1)  # [B, N, T]
    attends = jnp.sum(weights, axis=-1) > 0
    return jnp.sum(per_query * attends, axis=-1) / jnp.maximum(jnp.sum(attends, axis=-1), 1)
