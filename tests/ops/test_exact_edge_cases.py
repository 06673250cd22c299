"""Edge cases of the exact kinds: -inf bias rows, float64 inputs and traced scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .cases import _flash
from .reference import attention_np, random_qkv


@pytest.mark.parametrize("op", [ops.dense, _flash], ids=["dense", "flash"])
def test_rows_with_all_minus_inf_bias_give_zeros_and_finite_grads(op):
    """A row whose bias is -inf everywhere is fully masked: zeros, not NaN."""
    q, k, v = random_qkv(0, 1, 5, 3, 2, 2, 4)
    bias = np.zeros((1, 2, 5, 3), np.float32)
    bias[0, 1, 2] = -np.inf
    bias = jnp.asarray(bias)
    out = jax.jit(op)(q, k, v, bias=bias)
    np.testing.assert_array_equal(np.asarray(out)[0, 2, 1], 0.0)
    grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(op(q, k, v, bias=bias) ** 2), (0, 1, 2)))(
        q, k, v
    )
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("op", [ops.dense, _flash], ids=["dense", "flash"])
def test_float64_inputs_are_computed_in_float64(op):
    """With x64 on, both kinds match the float64 reference to float64 precision."""
    q, k, v = (np.asarray(x, np.float64) for x in random_qkv(0, 2, 9, 11, 4, 2, 8))
    masking = dict(is_causal=True, key_value_seq_lengths=np.array([11, 5], np.int32))
    with jax.enable_x64(True):
        out = op(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), **masking)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, attention_np(q, k, v, **masking), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", [ops.dense, _flash], ids=["dense", "flash"])
def test_traced_scale_and_its_gradient(op):
    """scale may be traced under jit; its gradient matches finite differences of the reference."""
    q, k, v = random_qkv(0, 2, 6, 7, 4, 2, 8)
    out = jax.jit(lambda s: op(q, k, v, scale=s, is_causal=True))(0.3)
    np.testing.assert_allclose(
        out, attention_np(q, k, v, scale=0.3, is_causal=True), atol=2e-5, rtol=2e-5
    )

    def loss(s):
        return jnp.sum(op(q, k, v, scale=s, is_causal=True))

    def loss_np(s):
        return attention_np(q, k, v, scale=s, is_causal=True).sum()

    eps = 1e-4
    numeric = (loss_np(0.3 + eps) - loss_np(0.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(0.3), numeric, rtol=1e-3, atol=1e-4)
