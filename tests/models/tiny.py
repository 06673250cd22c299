"""Tiny configs and inputs for every model family, shared by the model tests."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.models.build import MODELS, build

B, T, D = 2, 16, 32
KINDS = ("dense", "flash", "local", "performer", "linear", "bigbird")
# Settings that make each kind do its real work at T = 16 (several blocks, a narrow window).
KIND_PARAMS = {
    "flash": {"block_q": 8, "block_kv": 8},
    "local": {"local_window_size": (4, 4)},
    "performer": {"num_features": 16},
    "bigbird": {"block_size": 4, "num_global_blocks": 1, "num_random_blocks": 1},
}
SIZES = {
    "classifier": dict(vocab_size=50, num_layers=2, max_len=T, num_classes=3),
    "lm": dict(vocab_size=50, num_layers=2, max_len=T),
    "encoder_decoder": dict(
        source_vocab_size=50,
        target_vocab_size=40,
        num_encoder_layers=2,
        num_decoder_layers=2,
        max_len=T,
    ),
    "vit": dict(image_size=16, patch_size=4, channels=3, num_layers=2, num_classes=5),
}
FAMILIES = tuple(SIZES)


def config(name: str, **overrides):
    """The config dataclass of family `name` at test size, with the KIND_PARAMS of its kinds."""
    config_class, _ = MODELS[name]
    base = dict(d_model=D, num_heads=4, num_kv_heads=2, mlp_dim=64, **SIZES[name])
    config = config_class(**{**base, **overrides})
    if "kind_params" in overrides:
        return config
    # A config refuses parameters for kinds it does not use.
    in_use = config.self_attention_kinds() + config.cross_attention_kinds()
    kind_params = {kind: params for kind, params in KIND_PARAMS.items() if kind in in_use}
    return dataclasses.replace(config, kind_params=kind_params)


def model(name: str, seed: int = 0, **overrides):
    return build(config(name, **overrides), rngs=nnx.Rngs(seed))


def inputs(name: str, seed: int = 1) -> dict:
    """Keyword inputs of family `name`: padded token batches or images."""
    keys = jax.random.split(jax.random.key(seed), 3)
    lengths = jnp.array([T - 5, T])
    if name == "vit":
        return {"images": jax.random.normal(keys[0], (B, 16, 16, 3))}
    if name == "encoder_decoder":
        return {
            "source": jax.random.randint(keys[0], (B, T), 0, 50),
            "targets": jax.random.randint(keys[1], (B, T), 0, 40),
            "source_lengths": lengths,
        }
    tokens = jax.random.randint(keys[0], (B, T), 0, 50)
    if name == "classifier":
        return {"tokens": tokens, "lengths": lengths}
    return {"tokens": tokens}


@functools.partial(nnx.jit, static_argnames=("name",))
def apply(model, name: str, inputs: dict, **kwargs) -> jax.Array:
    """The model's logits on `inputs` (compiled: one compilation beats hundreds of eager ops)."""
    inputs = dict(inputs)
    if name == "vit":
        return model(inputs.pop("images"), **inputs, **kwargs)
    if name == "encoder_decoder":
        return model(inputs.pop("source"), inputs.pop("targets"), **inputs, **kwargs)
    return model(inputs.pop("tokens"), **inputs, **kwargs)


def loss(model, name: str, inputs: dict) -> jax.Array:
    """A scalar that depends on every logit: mean cross-entropy against fixed labels."""
    logits = apply(model, name, inputs)
    labels = jax.random.randint(jax.random.key(7), logits.shape[:-1], 0, logits.shape[-1])
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1).mean()


OUTPUT_SHAPES = {
    "classifier": (B, 3),
    "lm": (B, T, 50),
    "encoder_decoder": (B, T, 40),
    "vit": (B, 5),
}
