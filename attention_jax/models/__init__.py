"""Flax NNX models whose attention kind comes from the config: build one with `build`.

model = models.build(models.default_config('lm'), rngs=nnx.Rngs(0))
"""

from attention_jax.models.build import build, count_params, default_config
from attention_jax.models.classifier import SequenceClassifier
from attention_jax.models.config import (
    ClassifierConfig,
    EncoderDecoderConfig,
    LanguageModelConfig,
    TransformerConfig,
    ViTConfig,
)
from attention_jax.models.encoder_decoder import EncoderDecoder
from attention_jax.models.language_model import LanguageModel
from attention_jax.models.vit import ViT

__all__ = [
    "ClassifierConfig",
    "EncoderDecoder",
    "EncoderDecoderConfig",
    "LanguageModel",
    "LanguageModelConfig",
    "SequenceClassifier",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
    "build",
    "count_params",
    "default_config",
]
