"""Models by name: `build(config, rngs=...)` for a ConfigDict or a config dataclass."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from attention_jax.models import config as config_lib
from attention_jax.models.classifier import SequenceClassifier
from attention_jax.models.encoder_decoder import EncoderDecoder
from attention_jax.models.language_model import LanguageModel
from attention_jax.models.vit import ViT

# name -> (config dataclass, model class)
MODELS = {
    config_lib.ClassifierConfig.name: (config_lib.ClassifierConfig, SequenceClassifier),
    config_lib.LanguageModelConfig.name: (config_lib.LanguageModelConfig, LanguageModel),
    config_lib.EncoderDecoderConfig.name: (config_lib.EncoderDecoderConfig, EncoderDecoder),
    config_lib.ViTConfig.name: (config_lib.ViTConfig, ViT),
}


def _tokens(length: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, length), jnp.int32)


# The positional and keyword inputs of one example for each family, as shapes.
EXAMPLE_INPUTS = {
    "classifier": lambda c: (
        (_tokens(c.max_len),),
        {"pair": _tokens(c.max_len)} if c.dual_encoder else {},
    ),
    "lm": lambda c: ((_tokens(c.max_len),), {}),
    "encoder_decoder": lambda c: ((_tokens(c.max_len), _tokens(c.max_len)), {}),
    "vit": lambda c: (
        (jax.ShapeDtypeStruct((1, c.image_size, c.image_size, c.channels), c.compute_dtype),),
        {},
    ),
}


def _trace_first_call(model: nnx.Module, config: config_lib.TransformerConfig) -> None:
    """Traces (computes nothing) the model on one example, so a kind_params value the op
    refuses, or a parameter it lacks, fails at build rather than at the first step."""
    args, kwargs = EXAMPLE_INPUTS[config.name](config)
    try:
        jax.eval_shape(lambda *a, **k: model(*a, **k, deterministic=True), *args, **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{type(config).__name__}: attention with kind_params={config.kind_params} fails on "
            f"a first example: {error}"
        ) from error


def _entry(name):
    if name not in MODELS:
        raise ValueError(
            f"unknown model name {name!r} (config.name); choose one of {', '.join(MODELS)}."
        )
    return MODELS[name]


def build(config, *, rngs: nnx.Rngs) -> nnx.Module:
    """The model `config.name` names, from a ConfigDict or a config dataclass.

    Args:
      config: an `ml_collections.ConfigDict` (e.g. from `default_config`), a plain mapping,
        or a config dataclass such as `LanguageModelConfig`; its `name` picks the family.
      rngs: parameter (and dropout) randomness.

    Raises:
      ValueError: for an unknown name, unknown config keys, or settings that cannot build
        (an unknown attention kind, a head count that does not divide, kind_params that no
        layer takes or whose op refuses them).
    """
    if isinstance(config, config_lib.TransformerConfig):
        name = config.name
    elif isinstance(config, (ml_collections.ConfigDict, Mapping)):
        name = config.get("name")
    else:
        raise ValueError(
            f"build: config must be a ConfigDict, a mapping or a config dataclass; got "
            f"{type(config).__name__}."
        )
    config_class, model_class = _entry(name)
    if not isinstance(config, config_class):
        config = config_lib.from_config_dict(config_class, config)
    model = model_class(config, rngs=rngs)
    # Every kind runs with its defaults (the ops tests say so); only given params need a trace.
    if config.kind_params:
        _trace_first_call(model, config)
    return model


def default_config(name: str) -> ml_collections.ConfigDict:
    """A ConfigDict with the defaults of the model family `name`, ready to edit and `build`."""
    config_class, _ = _entry(name)
    return config_lib.default_config_dict(config_class)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameter elements (every `nnx.Param`, LoRA's included)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
