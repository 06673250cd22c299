"""FeedForward: GELU, ReLU and SwiGLU against float64 NumPy with the module's weights; LoRA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from attention_jax import layers

D, F = 8, 12


def _np(variable):
    return np.asarray(variable[...], np.float64)


def _dense(x, linear):
    kernel = _np(linear.kernel)
    if isinstance(linear, nnx.LoRALinear):
        kernel = kernel + _np(linear.lora.lora_a) @ _np(linear.lora.lora_b)
    return x @ kernel + _np(linear.bias)


def _reference(ffn, x):
    x = np.asarray(x, np.float64)
    up = _dense(x, ffn.up)
    if ffn.activation == "gelu":
        h = 0.5 * up * (1.0 + erf(up / np.sqrt(2.0)))
    elif ffn.activation == "relu":
        h = np.maximum(up, 0.0)
    else:
        gate = _dense(x, ffn.gate)
        h = gate / (1.0 + np.exp(-gate)) * up
    return _dense(h, ffn.down)


@pytest.mark.parametrize("activation", ["gelu", "relu", "swiglu"])
def test_equals_float64_numpy_with_the_module_weights(activation):
    ffn = layers.FeedForward(D, F, activation=activation, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, D))
    np.testing.assert_allclose(ffn(x), _reference(ffn, x), atol=1e-5, rtol=1e-5)
    assert (ffn.gate is None) == (activation != "swiglu")


def test_lora_adds_a_low_rank_update_to_every_projection():
    ffn = layers.FeedForward(D, F, activation="swiglu", lora_rank=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, D))
    base = ffn(x)  # B starts at zero, so the model starts as its base
    lora = nnx.to_flat_state(nnx.state(ffn, nnx.LoRAParam))
    assert {path[0] for path, _ in lora} == {"gate", "up", "down"}
    for i, name in enumerate(("gate", "up", "down")):
        b = getattr(ffn, name).lora.lora_b
        b[...] = jax.random.normal(jax.random.key(10 + i), b.shape)
    np.testing.assert_allclose(ffn(x), _reference(ffn, x), atol=1e-5, rtol=1e-5)
    assert np.abs(ffn(x) - base).max() > 1e-3


def test_bfloat16_compute_keeps_float32_params():
    ffn = layers.FeedForward(D, F, activation="swiglu", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    out = ffn(jax.random.normal(jax.random.key(1), (2, 5, D)))
    assert out.dtype == jnp.bfloat16
    assert {p.dtype for p in jax.tree.leaves(nnx.state(ffn, nnx.Param))} == {jnp.dtype("float32")}


def test_dropout_acts_only_when_not_deterministic():
    ffn = layers.FeedForward(D, F, dropout_rate=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, D))
    np.testing.assert_array_equal(ffn(x, deterministic=True), ffn(x, deterministic=True))
    assert np.abs(ffn(x) - ffn(x, deterministic=True)).max() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation="tanh"), "gelu, relu, swiglu"),
        (dict(lora_rank=0), "lora_rank"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.FeedForward(D, F, rngs=nnx.Rngs(0), **kwargs)
