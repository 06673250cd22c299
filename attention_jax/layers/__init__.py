"""Flax NNX building blocks around the attention ops: attention, positions, feed-forward,
mixtures of experts, blocks."""

from attention_jax.layers.additive import AdditiveAttention
from attention_jax.layers.attention import MultiHeadAttention
from attention_jax.layers.attention_config import AttentionConfig
from attention_jax.layers.blocks import DecoderBlock, EncoderBlock, make_attention
from attention_jax.layers.feedforward import FeedForward
from attention_jax.layers.linen import linen_attention
from attention_jax.layers.moe import MoEFeedForward, RoutingStats
from attention_jax.layers.moe_attention import MoEAttention
from attention_jax.layers.positional import (
    LearnedPositions,
    alibi_bias,
    alibi_bias_at,
    alibi_slopes,
    apply_rope,
    sinusoidal_at,
    sinusoidal_positions,
)
from attention_jax.layers.random_features import FeatureProjection, RandomFeatures
from attention_jax.layers.short_conv import ShortConvolution
from attention_jax.layers.state_gates import StateGates

__all__ = [
    "AdditiveAttention",
    "AttentionConfig",
    "DecoderBlock",
    "EncoderBlock",
    "FeatureProjection",
    "FeedForward",
    "LearnedPositions",
    "MoEAttention",
    "MoEFeedForward",
    "MultiHeadAttention",
    "RandomFeatures",
    "RoutingStats",
    "ShortConvolution",
    "StateGates",
    "alibi_bias",
    "alibi_bias_at",
    "alibi_slopes",
    "apply_rope",
    "linen_attention",
    "make_attention",
    "sinusoidal_at",
    "sinusoidal_positions",
]
