"""The attention layer for Flax Linen models, through Flax's own NNX-to-Linen bridge."""

from __future__ import annotations

from flax import nnx

from attention_jax.layers.attention import MultiHeadAttention


def linen_attention(in_features: int, num_heads: int, **kwargs):
    """A Linen module wrapping `MultiHeadAttention(in_features, num_heads, **kwargs)`.

    Parameters land in Linen's 'params' collection and Performer features in
    'FeatureProjection'; pass a 'dropout' rng to `apply` when dropout_rate > 0. Example:

        attn = linen_attention(512, 8, kind="local", positions="rope")
        variables = attn.init(jax.random.key(0), x)
        y = attn.apply(variables, x, is_causal=True)
    """
    return nnx.bridge.to_linen(MultiHeadAttention, in_features, num_heads, **kwargs)
