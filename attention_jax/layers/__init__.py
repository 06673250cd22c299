"""Flax NNX building blocks around the attention ops: positions (more to come: attention, MoE)."""

from attention_jax.layers.positional import (
    LearnedPositions,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    sinusoidal_positions,
)

__all__ = [
    "LearnedPositions",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "sinusoidal_positions",
]
