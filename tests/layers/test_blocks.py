"""Blocks: decoder self-attention is causal through gradients, padding is hidden, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers

D, N, F, T = 32, 4, 64, 8
CAUSAL_KINDS = {"dense": {}, "local": {"local_window_size": (3, 3)}, "linear": {}}


def _x(key=1, length=T, batch=2):
    return jax.random.normal(jax.random.key(key), (batch, length, D))


def _dependence(block, x):
    """|d out[t] / d x[t']| summed over batch and features: [T, T']."""
    graphdef, state = nnx.split(block)
    jac = jax.jit(jax.jacobian(lambda s, x: nnx.merge(graphdef, s)(x), argnums=1))(state, x)
    # jac: [B, T, D, B, T', D]
    return np.abs(np.asarray(jac)).sum(axis=(0, 2, 3, 5))


@pytest.mark.parametrize("kind", sorted(CAUSAL_KINDS))
def test_decoder_block_is_causal(kind):
    block = layers.DecoderBlock(
        D, N, F, kind=kind, kind_params=CAUSAL_KINDS[kind], positions="rope", rngs=nnx.Rngs(0)
    )
    dep = _dependence(block, _x(batch=1))
    assert np.all(dep[np.triu_indices(T, k=1)] == 0), f"{kind}: output t sees input t' > t"
    assert np.all(np.diag(dep, k=-1) > 0), f"{kind}: output t ignores input t - 1"


def test_encoder_block_sees_both_directions():
    dep = _dependence(layers.EncoderBlock(D, N, F, rngs=nnx.Rngs(0)), _x(batch=1))
    assert np.all(dep > 0)


def test_encoder_block_hides_padded_keys():
    block = layers.EncoderBlock(D, N, F, norm="rmsnorm", rngs=nnx.Rngs(0))
    lengths = jnp.array([5, 8])
    x, other = _x(1), _x(2)
    padded = jnp.arange(T)[None, :, None] >= lengths[:, None, None]
    changed = jnp.where(padded, other, x)
    want, got = block(x, seq_lengths=lengths), block(changed, seq_lengths=lengths)
    np.testing.assert_allclose(jnp.where(padded, 0, got), jnp.where(padded, 0, want), atol=1e-6)
    assert np.abs(block(changed) - block(x)).max() > 1e-3


@pytest.mark.parametrize("cross", ["multihead", "additive"])
def test_cross_attention_hides_padded_context(cross):
    block = layers.DecoderBlock(D, N, F, cross_attention=cross, rngs=nnx.Rngs(0))
    x, context, other = _x(1), _x(2, length=6), _x(3, length=6)
    lengths = jnp.array([2, 6])
    padded = jnp.arange(6)[None, :, None] >= lengths[:, None, None]
    want = block(x, context, context_lengths=lengths)
    got = block(x, jnp.where(padded, other, context), context_lengths=lengths)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(block(x, other, context_lengths=lengths) - want).max() > 1e-3


def test_context_must_match_the_cross_attention_setting():
    with pytest.raises(ValueError, match="needs a context"):
        layers.DecoderBlock(D, N, F, cross_attention="multihead", rngs=nnx.Rngs(0))(_x())
    with pytest.raises(ValueError, match="takes no context"):
        layers.DecoderBlock(D, N, F, rngs=nnx.Rngs(0))(_x(), _x(2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="batchnorm"), "layernorm, rmsnorm"),
        (dict(kind="nope"), "flash"),
        (dict(num_kv_heads=3), "multiple"),
        (dict(cross_attention="luong"), "additive"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.DecoderBlock(D, N, F, rngs=nnx.Rngs(0), **kwargs)


def test_residual_dropout_acts_only_when_not_deterministic():
    block = layers.EncoderBlock(D, N, F, dropout_rate=0.5, rngs=nnx.Rngs(0))
    x = _x()
    np.testing.assert_array_equal(block(x, deterministic=True), block(x, deterministic=True))
    assert np.abs(block(x) - block(x, deterministic=True)).max() > 0
