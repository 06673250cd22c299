"""flash alone: block sizes, blocked-engine gradients, memory and HVPs, against ops.dense."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import measure

from .cases import GRAD_CASES, _call, _flash, assert_grads_close, attention_grads, draw_case
from .reference import random_qkv

FLASH_KINDS = [
    pytest.param(dict(block_q=16, block_kv=8), id="flash-16x8"),
    pytest.param({}, id="flash-default"),
]


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(dict(block_q=0), id="block_q_0"),
        pytest.param(dict(block_kv=-8), id="block_kv_negative"),
        pytest.param(dict(block_q=True), id="block_q_bool"),
    ],
)
def test_flash_bad_block_sizes(block):
    """Flash block sizes must be positive."""
    with pytest.raises(ValueError, match=next(iter(block))):
        _call(ops.flash, **block)


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


@pytest.mark.parametrize(
    "key_offset, masking",
    [
        # Visible logits near -120: the zero padding key of the last block is 120 above them.
        pytest.param(-60.0, dict(), id="padded-kv-block"),
        # The last key's logit is ~120 for earlier queries, which causal masking hides.
        pytest.param(60.0, dict(is_causal=True), id="causal"),
    ],
)
def test_flash_second_order_gradients_match_dense(key_offset, masking):
    """Hessian-vector products stay finite when hidden logits exceed visible ones by > 88.

    Run in float64: at logits of +-120 float32 rounding alone moves these HVPs by percents.
    """
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        q = jnp.asarray(1.0 + 0.1 * rng.standard_normal((1, 4, 1, 4)))
        k = 0.1 * rng.standard_normal((1, 3, 1, 4))
        k[:, -1 if masking else slice(None)] += key_offset
        k, v = jnp.asarray(k), jnp.asarray(rng.standard_normal((1, 3, 1, 4)))

        def hvp(op):
            def loss(q):
                return jnp.sum(op(q, k, v, **masking) ** 2)

            # Compiled as one program: eager, every primitive would compile on its own.
            return jax.jit(lambda q: jax.jvp(jax.grad(loss), (q,), (jnp.ones_like(q),))[1])(q)

        want = hvp(ops.dense)
        got = hvp(lambda *a, **kw: ops.flash(*a, block_q=2, block_kv=2, **kw))
    assert got.dtype == jnp.float64 and np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)


def test_flash_memory_stays_linear_with_broadcast_mask_and_bias():
    """A [B, 1, 1, S] padding mask or per-key bias must not become a [T, S] array."""
    shape = measure.Shape(batch=1, num_heads=2, num_kv_heads=2, head_dim=16)

    def fwd_bytes(n, **extra):
        def op(q, k, v, **kw):
            return ops.flash(q, k, v, block_q=128, block_kv=128, **extra, **kw)

        # Forward only: the backward program's bytes are not asserted on.
        cost = measure.measure_cost("flash", op, shape, n, memory_budget_bytes=0, backward=False)
        return cost.fwd_bytes

    for n in (1024, 4096):
        plain = fwd_bytes(n)
        masked = fwd_bytes(
            n, mask=jnp.ones((1, 1, 1, n), bool), bias=jnp.zeros((1, 1, 1, n), jnp.float32)
        )
        # Mask and bias add O(n) bytes; a broadcast [n, n] float would add 4 * n * n.
        assert masked - plain < 16 * n


def test_broadcast_bias_gradient_sums_over_queries():
    """d/dbias of a [1, 1, 1, S] bias in flash equals the dense one."""
    q, k, v = random_qkv(0, 2, 9, 11, 4, 2, 8)
    bias = jnp.linspace(-1, 1, 11).reshape(1, 1, 1, 11)

    def grad(op):
        return jax.jit(jax.grad(lambda b: jnp.sum(op(q, k, v, bias=b, is_causal=True) ** 2)))(bias)

    np.testing.assert_allclose(grad(_flash), grad(ops.dense), atol=5e-5, rtol=5e-5)
