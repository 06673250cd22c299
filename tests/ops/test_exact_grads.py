"""Gradients of dense and flash: bfloat16, fully masked rows, float64 finite differences."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .cases import assert_grads_close, attention_grads, draw_case
from .reference import attention_np, jax_nn_attention, random_qkv, valid_rows

# Directional derivatives: float32 gradients against float64 central differences.
FD_TOL = dict(atol=1e-5, rtol=1e-4)
# bfloat16 gradients vs float32 ones, as a relative L2 error: jax.nn in bfloat16 is at ~3e-3.
BF16_GRAD_REL = 1e-2


@pytest.mark.parametrize(
    "kind, kind_kw",
    [
        pytest.param("dense", {}, id="dense"),
        pytest.param("flash", dict(block_q=16, block_kv=8), id="flash-16x8"),
    ],
)
def test_bfloat16_grads(kind, kind_kw):
    """bfloat16 gradients stay close to float32 jax.nn gradients on the same rounded inputs."""
    q, k, v, kwargs, ct = draw_case((2, 37, 53, 8, 2, 32), ("causal", "kv_lengths", "bias_1NTS"))
    ct = ct * valid_rows(q, k, **kwargs)[..., None]
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    op = functools.partial(ops.get(kind), **kind_kw)
    grads = attention_grads(op, q, k, v, ct, **kwargs)
    upcast = (x.astype(jnp.float32) for x in (q, k, v))
    expected = attention_grads(jax_nn_attention, *upcast, ct, **kwargs)
    for name, g, e in zip(("query", "key", "value", "bias"), grads, expected, strict=True):
        assert np.linalg.norm(g - e) / np.linalg.norm(e) < BF16_GRAD_REL, name


@pytest.mark.parametrize(
    "kind, kind_kw",
    [
        pytest.param("dense", {}, id="dense"),
        pytest.param("flash", dict(block_q=8, block_kv=8), id="flash-8x8"),
    ],
)
def test_fully_masked_rows_have_finite_zero_grads(kind, kind_kw):
    """Rows with no allowed key give finite gradients and contribute nothing to them."""
    B, T, S, N, K, H = 2, 21, 13, 4, 2, 16
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    mask = np.ones((B, N, T, S), bool)
    mask[1, 2, 4] = False
    kwargs = dict(
        mask=jnp.asarray(mask),
        key_value_seq_lengths=jnp.array([0, S], jnp.int32),
        bias=jnp.asarray(np.random.default_rng(1).standard_normal((B, N, T, S)), jnp.float32),
    )
    ct = jnp.ones((B, T, N, H), jnp.float32)
    op = functools.partial(ops.get(kind), **kind_kw)
    grads = attention_grads(op, q, k, v, ct, **kwargs)
    assert all(np.isfinite(g).all() for g in grads)
    valid_BTN = valid_rows(q, k, **kwargs)
    np.testing.assert_array_equal(grads[0][~valid_BTN], 0.0)
    np.testing.assert_array_equal(grads[3][~valid_BTN.transpose(0, 2, 1)], 0.0)
    np.testing.assert_array_equal(grads[1][0], 0.0)
    np.testing.assert_array_equal(grads[2][0], 0.0)
    assert_grads_close(grads, attention_grads(op, q, k, v, ct * valid_BTN[..., None], **kwargs))


@pytest.mark.parametrize(
    "kind, kind_kw",
    [
        pytest.param("dense", {}, id="dense"),
        pytest.param("flash", dict(block_q=2, block_kv=2), id="flash-2x2"),
    ],
)
def test_grads_match_float64_finite_differences(kind, kind_kw):
    """Directional derivatives of the op equal central differences of the float64 reference."""
    B, T, S, N, K, H = 2, 4, 5, 2, 1, 4
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    rng = np.random.default_rng(1)
    mask = np.ones((B, N, T, S), bool)
    mask[0, 1, 2] = False
    kwargs = dict(
        mask=jnp.asarray(mask), is_causal=True, key_value_seq_lengths=jnp.array([5, 3], jnp.int32)
    )
    bias = jnp.asarray(rng.standard_normal((B, N, T, S)), jnp.float32)
    ct = rng.standard_normal((B, T, N, H))
    op = functools.partial(ops.get(kind), **kind_kw)
    grads = attention_grads(op, q, k, v, jnp.asarray(ct, jnp.float32), bias, **kwargs)
    args = [np.asarray(x, np.float64) for x in (q, k, v, bias)]

    def loss_np(args):
        return np.sum(ct * attention_np(*args[:3], args[3], **kwargs))

    eps = 1e-6
    for i, name in enumerate(("query", "key", "value", "bias")):
        for _ in range(3):
            direction = rng.standard_normal(args[i].shape)
            plus, minus = list(args), list(args)
            plus[i] = args[i] + eps * direction
            minus[i] = args[i] - eps * direction
            finite_diff = (loss_np(plus) - loss_np(minus)) / (2 * eps)
            np.testing.assert_allclose(
                np.sum(grads[i] * direction), finite_diff, err_msg=name, **FD_TOL
            )
