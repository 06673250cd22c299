"""MultiHeadAttention: equal to Flax's with the same weights, any kind by name, gradients flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers, ops

D, N = 32, 4


def _copy_weights(ours, theirs):
    for name in ("query", "key", "value", "out"):
        getattr(ours, name).kernel[...] = getattr(theirs, name).kernel[...]
        getattr(ours, name).bias[...] = getattr(theirs, name).bias[...]


@pytest.mark.parametrize("cross", [False, True])
def test_equals_flax_multi_head_attention_with_the_same_weights(cross):
    theirs = nnx.MultiHeadAttention(
        num_heads=N,
        in_features=D,
        decode=False,
        rngs=nnx.Rngs(0),
        attention_fn=ops.flax_attention_fn("dense"),
    )
    ours = layers.MultiHeadAttention(D, N, rngs=nnx.Rngs(1))
    _copy_weights(ours, theirs)
    x = jax.random.normal(jax.random.key(2), (2, 7, D))
    context = jax.random.normal(jax.random.key(3), (2, 5, D)) if cross else None
    mask = jax.random.bernoulli(jax.random.key(4), 0.7, (2, 1, 7, 5 if cross else 7))
    want = theirs(x, context if cross else x, mask=mask)
    np.testing.assert_allclose(ours(x, context, mask=mask), want, atol=1e-5, rtol=1e-5)


def test_flash_layer_equals_dense_layer():
    dense = layers.MultiHeadAttention(D, N, num_kv_heads=2, rngs=nnx.Rngs(0))
    flash = layers.MultiHeadAttention(
        D, N, num_kv_heads=2, kind="flash", kind_params={"block_q": 4}, rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(jax.random.key(1), (2, 9, D))
    np.testing.assert_allclose(
        flash(x, is_causal=True), dense(x, is_causal=True), atol=1e-5, rtol=1e-5
    )


# MoBA's defaults (blocks of 64, top-3) need sequences of 192 tokens or more.
SHORT_SEQUENCE_PARAMS = {"moba": {"block_size": 4, "top_k": 2}}


@pytest.mark.parametrize("kind", ops.names())
def test_every_kind_runs_with_its_defaults_and_every_parameter_gets_a_gradient(kind):
    layer = layers.MultiHeadAttention(
        D,
        N,
        num_kv_heads=2,
        kind=kind,
        kind_params=SHORT_SEQUENCE_PARAMS.get(kind),
        rngs=nnx.Rngs(0),
    )
    x = jax.random.normal(jax.random.key(1), (2, 16, D))
    # Kinds with no bidirectional form (the state-carrying ones) run causally.
    causal = not ops.kind(kind).bidirectional
    out = layer(x, is_causal=causal)
    assert out.shape == x.shape and jnp.isfinite(out).all()
    grads = nnx.grad(lambda m: jnp.sum(m(x, is_causal=causal) ** 2))(layer)
    for path, g in jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param)):
        assert np.abs(np.asarray(g)).max() > 0, f"{kind}: no gradient reaches {path}"


def test_performer_features_are_state_and_redraw_changes_them():
    layer = layers.MultiHeadAttention(D, N, kind="performer", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 8, D))
    before = layer(x)
    np.testing.assert_array_equal(layer(x), before)
    assert "features" not in nnx.state(layer, nnx.Param)
    assert "features" in nnx.state(layer, layers.random_features.FeatureProjection)
    layer.redraw(jax.random.key(5))
    assert np.abs(layer(x) - before).max() > 1e-4


def test_rope_and_alibi_positions():
    x = jax.random.normal(jax.random.key(1), (1, 6, D))
    rope = layers.MultiHeadAttention(D, N, positions="rope", rngs=nnx.Rngs(0))
    plain = layers.MultiHeadAttention(D, N, rngs=nnx.Rngs(0))
    assert np.abs(rope(x) - plain(x)).max() > 1e-4
    alibi = layers.MultiHeadAttention(D, N, kind="flash", positions="alibi", rngs=nnx.Rngs(0))
    want = ops.dense(plain.query(x), plain.key(x), plain.value(x), layers.alibi_bias(N, 6, 6))
    np.testing.assert_allclose(alibi(x), plain.out(want), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="bias"):
        layers.MultiHeadAttention(D, N, kind="linear", positions="alibi", rngs=nnx.Rngs(0))(x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="nope"), "flash"),
        (dict(num_kv_heads=3), "multiple"),
        (dict(positions="xpos"), "positions"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.MultiHeadAttention(D, N, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize(
    "kind, kind_params",
    [
        ("local", {"local_window_size": (3, 2)}),
        ("longformer", {"local_window_size": (2, 2)}),
        ("block_sparse", {"block_size": 8}),
        ("strided", {}),
        ("bigbird", {"block_size": 8, "num_global_blocks": 1, "num_random_blocks": 1}),
    ],
)
def test_sparse_layer_equals_dense_with_the_pattern_it_uses(kind, kind_params):
    """The parameters the layer fills in (stride, layout, seed) describe what it computes."""
    layer = layers.MultiHeadAttention(D, N, kind=kind, kind_params=kind_params, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 40, D))
    params = layer._variant_params(40, 40)
    pattern = ops.pattern_mask(kind, 40, 40, **params)
    want = ops.dense(
        layer.query(x), layer.key(x), layer.value(x), mask=jnp.asarray(pattern)[None, None]
    )
    np.testing.assert_allclose(layer(x), layer.out(want), atol=1e-5, rtol=1e-5)
    assert not pattern.all()
