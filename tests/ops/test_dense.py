"""dense alone: its two engines, its weights and its gradients, against float64 NumPy and jax.nn."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .cases import BF16_TOL, F32_TOL, GRAD_CASES, assert_grads_close, attention_grads, draw_case
from .reference import (
    attention_np,
    jax_nn_attention,
    random_masking,
    random_qkv,
    valid_rows,
    weights_np,
)

# dense has two engines: a fused one (output only) and `return_weights=True`, which keeps the
# weights. Both give the same values and derivatives, in reverse and in forward mode.

TOL = dict(atol=2e-5, rtol=2e-5)

CASES = [
    pytest.param(shape, forms, id=name)
    for name, shape, forms in [
        ("GQA_causal_lengths", (2, 9, 11, 4, 2, 8), ("causal", "q_lengths", "kv_lengths")),
        ("MHA_window_bias", (2, 9, 11, 4, 4, 8), ("window", "bias")),
        (
            "MQA_segments_mask_bias_B1TS",
            (2, 9, 11, 4, 1, 8),
            ("segments", "mask_B1TS", "bias_B1TS"),
        ),
    ]
]
CAPS = [pytest.param(None, id="no-cap"), pytest.param(2.0, id="cap2")]


def _split(kwargs):
    """Array arguments (traced) and the rest (static, hashable)."""
    arrays = {n: x for n, x in kwargs.items() if isinstance(x, jax.Array) and n != "bias"}
    fixed = tuple(sorted((n, x) for n, x in kwargs.items() if n not in arrays and n != "bias"))
    return arrays, fixed


def _attend(q, k, v, bias, scale, arrays, fixed, with_weights):
    out = ops.dense(
        q, k, v, bias, scale=scale, **arrays, **dict(fixed), return_weights=with_weights
    )
    return out[0] if with_weights else out


@functools.partial(jax.jit, static_argnames=("fixed",))
def _both_engines(q, k, v, bias, ct, arrays, *, fixed):
    """Outputs and d/d(q, k, v, bias, scale) of sum(out * ct), fused engine then weights engine."""

    def loss(q, k, v, bias, scale, with_weights):
        return jnp.sum(_attend(q, k, v, bias, scale, arrays, fixed, with_weights) * ct)

    scale = jnp.float32(0.3)
    results = []
    for with_weights in (False, True):
        out = _attend(q, k, v, bias, scale, arrays, fixed, with_weights)
        grads = jax.grad(loss, argnums=(0, 1, 2, 3, 4))(q, k, v, bias, scale, with_weights)
        results.append((out, grads))
    return results


def _draw(shape, forms, cap):
    B, T, S, N, K, H = shape
    q, k, v = random_qkv(0, *shape)
    kwargs = random_masking(1, forms, B, T, S, N)
    bias = kwargs.get("bias", jnp.zeros((1, 1, 1, 1), jnp.float32))
    if cap is not None:
        kwargs["logits_soft_cap"] = cap
    ct = jnp.asarray(np.random.default_rng(2).standard_normal((B, T, N, H)), jnp.float32)
    return q, k, v, bias, kwargs, ct


@pytest.mark.parametrize("cap", CAPS)
@pytest.mark.parametrize("shape, forms", CASES)
def test_both_engines_agree_in_value_and_gradient(shape, forms, cap):
    """Fused and weights engines agree with each other and, without a cap, with float64."""
    q, k, v, bias, kwargs, ct = _draw(shape, forms, cap)
    arrays, fixed = _split(kwargs)
    (fused_out, fused_grads), (weights_out, weights_grads) = _both_engines(
        q, k, v, bias, ct, arrays, fixed=fixed
    )
    np.testing.assert_allclose(fused_out, weights_out, **TOL)
    if cap is None:
        masking = {n: x for n, x in kwargs.items() if n != "bias"}
        want = attention_np(q, k, v, bias, scale=0.3, **masking)
        np.testing.assert_allclose(fused_out, want, **TOL)
    names = ("query", "key", "value", "bias", "scale")
    for name, a, b in zip(names, fused_grads, weights_grads, strict=True):
        assert np.isfinite(np.asarray(a)).all(), name
        np.testing.assert_allclose(a, b, err_msg=f"d/d{name}", **TOL)


@functools.partial(jax.jit, static_argnames=("fixed", "with_weights"))
def _forward_and_reverse(primals, tangents, ct, arrays, *, fixed, with_weights):
    """<jvp(f)(tangents), ct> and vjp(f)(ct), for f = attention of (q, k, v, bias, scale)."""

    def f(q, k, v, bias, scale):
        return _attend(q, k, v, bias, scale, arrays, fixed, with_weights)

    out, d_out = jax.jvp(f, primals, tangents)
    return d_out, jnp.sum(d_out * ct), jax.vjp(f, *primals)[1](ct)


@pytest.mark.parametrize("with_weights", [False, True], ids=["fused", "weights"])
@pytest.mark.parametrize("cap", CAPS)
@pytest.mark.parametrize("shape, forms", CASES)
def test_forward_mode_is_the_transpose_of_reverse_mode(shape, forms, cap, with_weights):
    """<J t, c> = <t, J^T c> for every input (forward mode works, unlike flash's), and the
    derivative is exactly zero on rows that see no key."""
    q, k, v, bias, kwargs, ct = _draw(shape, forms, cap)
    arrays, fixed = _split(kwargs)
    primals = (q, k, v, bias, jnp.float32(0.3))
    rng = np.random.default_rng(3)
    tangents = tuple(jnp.asarray(rng.standard_normal(np.shape(x)), jnp.float32) for x in primals)
    d_out, forward, cotangents = _forward_and_reverse(
        primals, tangents, ct, arrays, fixed=fixed, with_weights=with_weights
    )
    reverse = sum(jnp.sum(t * c) for t, c in zip(tangents, cotangents, strict=True))
    np.testing.assert_allclose(forward, reverse, rtol=1e-4, atol=1e-4)
    masking = {n: x for n, x in kwargs.items() if n not in ("bias", "logits_soft_cap")}
    np.testing.assert_array_equal(np.asarray(d_out)[~valid_rows(q, k, **masking)], 0.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize(
    "forms",
    [
        pytest.param(("causal", "bias"), id="causal+bias"),
        pytest.param(("segments", "kv_lengths", "mask"), id="segments+kv_lengths+mask"),
    ],
)
def test_dense_return_weights(dtype, forms):
    """Weights: float32 [B, N, T, S], rows sum to 1 (0 if fully masked), weights @ v = out."""
    B, T, S, N, K, H = 2, 19, 23, 4, 2, 16
    q, k, v = random_qkv(0, B, T, S, N, K, H, dtype=dtype)
    kwargs = random_masking(1, forms, B, T, S, N)
    out, weights = ops.dense(q, k, v, **kwargs, return_weights=True)
    assert weights.shape == (B, N, T, S) and weights.dtype == jnp.float32
    tol = F32_TOL if dtype == jnp.float32 else BF16_TOL
    np.testing.assert_allclose(out.astype(jnp.float32), ops.dense(q, k, v, **kwargs), **tol)
    weights = np.asarray(weights, np.float64)
    np.testing.assert_allclose(weights, weights_np(q, k, **kwargs), **tol)
    valid_BNT = valid_rows(q, k, **kwargs).transpose(0, 2, 1)
    np.testing.assert_allclose(weights.sum(-1), valid_BNT.astype(np.float64), **tol)
    np.testing.assert_array_equal(weights[~valid_BNT], 0.0)
    v_BSNH = np.repeat(np.asarray(v, np.float64), N // K, axis=2)
    np.testing.assert_allclose(
        np.einsum("bnts,bsnh->btnh", weights, v_BSNH), np.asarray(out, np.float64), **tol
    )


@pytest.mark.parametrize("shape, forms", GRAD_CASES)
def test_dense_grads_match_jax_nn(shape, forms):
    """Dense gradients equal jax.nn's when rows without an allowed key get zero cotangent."""
    q, k, v, kwargs, ct = draw_case(shape, forms)
    # jax.nn gives fully masked rows a uniform average; zero cotangent there removes them.
    ct = ct * valid_rows(q, k, **kwargs)[..., None]
    grads = attention_grads(ops.dense, q, k, v, ct, **kwargs)
    assert_grads_close(grads, attention_grads(jax_nn_attention, q, k, v, ct, **kwargs))
    if "bias" in kwargs:
        assert grads[3].shape == kwargs["bias"].shape
