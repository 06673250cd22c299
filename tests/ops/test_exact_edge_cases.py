"""Edge cases of the exact kinds: -inf bias rows, second-order gradients, traced scale, and
broadcast masks that must stay small in flash."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import measure

from .reference import attention_np, random_qkv

SMALL_BLOCKS = dict(block_q=4, block_kv=2)


def _flash(*args, **kwargs):
    return ops.flash(*args, **SMALL_BLOCKS, **kwargs)


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
