"""Gradients of the exact ops: flash vs dense vs jax.nn, and vs float64 finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .reference import attention_np, jax_nn_attention, random_masking, random_qkv, valid_rows

# Seen: float32 jax.nn gradients differ from float64 ones by <= 7e-6 at these sizes.
GRAD_TOL = dict(atol=5e-5, rtol=5e-5)
# Directional derivatives: float32 gradients against float64 central differences.
FD_TOL = dict(atol=1e-5, rtol=1e-4)
# bfloat16 gradients vs float32 ones, as a relative L2 error: jax.nn in bfloat16 is at ~3e-3.
BF16_GRAD_REL = 1e-2

FLASH_KINDS = [
    pytest.param(dict(block_q=16, block_kv=8), id="flash-16x8"),
    pytest.param({}, id="flash-default"),
]

GRAD_CASES = [
    pytest.param(shape, forms, id=name)
    for name, shape, forms in [
        ("causal", (2, 37, 53, 8, 2, 32), ("causal",)),
        ("window", (2, 37, 53, 8, 2, 32), ("window",)),
        ("lengths", (2, 37, 53, 8, 2, 32), ("q_lengths", "kv_lengths")),
        ("MQA_H80_causal_T-gt-S", (2, 53, 37, 8, 1, 80), ("causal",)),
        ("MHA_H64_segments_mask", (2, 37, 53, 8, 8, 64), ("segments", "mask_B1TS")),
        ("bias_BNTS", (2, 37, 53, 8, 2, 32), ("bias", "causal")),
        ("bias_1NTS", (2, 37, 53, 8, 2, 32), ("bias_1NTS", "kv_lengths")),
        ("bias_B1TS", (2, 37, 53, 8, 2, 32), ("bias_B1TS", "window_int", "scale")),
    ]
]


@functools.partial(jax.jit, static_argnames=("op", "fixed"))
def _grads(q, k, v, ct, bias, arrays, *, op, fixed):
    def loss(q, k, v, bias):
        return jnp.sum(op(q, k, v, bias, **arrays, **dict(fixed)).astype(jnp.float32) * ct)

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    return jax.grad(loss, argnums)(q, k, v, bias)


def attention_grads(op, q, k, v, ct, bias=None, **kwargs):
    """d/dq, d/dk, d/dv (and d/dbias) of sum(op(...) * ct) as float64 NumPy arrays.

    One compiled program, with the array arguments traced: eager, every primitive would compile
    on its own. It is cached per op, shapes and fixed arguments, so within a process the dense
    gradients of a case compile once for every test that uses them. test_transforms checks
    jit(grad) against the eager gradient.
    """
    arrays = {name: x for name, x in kwargs.items() if isinstance(x, jax.Array)}
    fixed = tuple(sorted((name, x) for name, x in kwargs.items() if name not in arrays))
    grads = _grads(q, k, v, ct, bias, arrays, op=op, fixed=fixed)
    return [np.asarray(g, np.float64) for g in grads]


def draw_case(shape, forms, seed=0):
    """q, k, v, masking kwargs and a random cotangent [B, T, N, H]."""
    B, T, S, N, K, H = shape
    q, k, v = random_qkv(seed, *shape)
    kwargs = random_masking(seed + 1, forms, B, T, S, N)
    ct = jnp.asarray(np.random.default_rng(seed + 2).standard_normal((B, T, N, H)), jnp.float32)
    return q, k, v, kwargs, ct


def assert_grads_close(actual, expected):
    """Compares gradient lists entry by entry, naming the argument on failure."""
    assert len(actual) == len(expected)
    for name, a, e in zip(("query", "key", "value", "bias"), actual, expected, strict=False):
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a, e, err_msg=f"d/d{name}", **GRAD_TOL)


@pytest.mark.parametrize("flash_kw", FLASH_KINDS)
@pytest.mark.parametrize("shape, forms", GRAD_CASES)
def test_flash_grads_match_dense(shape, forms, flash_kw):
    """Flash gradients equal dense ones, fully masked rows included."""
    q, k, v, kwargs, ct = draw_case(shape, forms)
    flash = functools.partial(ops.flash, **flash_kw)
    assert_grads_close(
        attention_grads(flash, q, k, v, ct, **kwargs),
        attention_grads(ops.dense, q, k, v, ct, **kwargs),
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
