"""Flax NNX building blocks around the attention ops: attention and positions."""

from attention_jax.layers.attention import MultiHeadAttention
from attention_jax.layers.positional import (
    LearnedPositions,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    sinusoidal_positions,
)

__all__ = [
    "LearnedPositions",
    "MultiHeadAttention",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "sinusoidal_positions",
]
