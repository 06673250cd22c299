"""Inputs, tolerances and helpers that several op test files share."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import count_flops

from .reference import random_masking, random_qkv

# --- A valid call, for the argument checks (test_contract, test_flash, test_registry) ---

B, T, S, N, K, H = 2, 5, 7, 4, 2, 8


def _call(op, **overrides):
    """Calls op on valid inputs with some arguments replaced or added."""
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    kwargs = dict(query=q, key=k, value=v) | overrides
    return op(kwargs.pop("query"), kwargs.pop("key"), kwargs.pop("value"), **kwargs)


# --- Forward tolerances of the exact kinds (test_exact_kinds, test_dense) ---

# Seen: float32 op vs float64 reference differ by ~3e-6 at these sizes; 2e-5 leaves headroom.
F32_TOL = dict(atol=2e-5, rtol=2e-5)
# bfloat16 keeps 8 mantissa bits (~4e-3 relative) in inputs, probabilities and output.
BF16_TOL = dict(atol=2e-2, rtol=2e-2)

# --- Flash with small blocks (test_exact_edge_cases, test_flash) ---

SMALL_BLOCKS = dict(block_q=4, block_kv=2)


def _flash(*args, **kwargs):
    return ops.flash(*args, **SMALL_BLOCKS, **kwargs)


# --- Gradients of the exact kinds (test_exact_grads, test_flash, test_dense) ---

# Seen: float32 jax.nn gradients differ from float64 ones by <= 7e-6 at these sizes.
GRAD_TOL = dict(atol=5e-5, rtol=5e-5)

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


# --- The sparse pattern kinds' FLOPs and bad parameters (test_strided, test_bigbird) ---


def _flops(op, n):
    x = jax.ShapeDtypeStruct((1, n, 8, 64), jnp.float32)
    return count_flops(op, x, x, x)


X = jnp.ones((1, 8, 2, 4))
