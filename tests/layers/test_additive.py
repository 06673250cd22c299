"""AdditiveAttention: matches a float64 NumPy reference; masks safe; weights recorded on request."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax.layers.additive import AdditiveAttention

B, T, S, DQ, DK, DV, A = 2, 5, 7, 6, 4, 3, 8


def _inputs(seed=0):
    kq, kc, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (B, T, DQ)),
        jax.random.normal(kc, (B, S, DK)),
        jax.random.normal(kv, (B, S, DV)),
    )


def _reference(layer, query, context, values=None, mask=None, lengths=None):
    """Bahdanau attention in float64 from the layer's weights, one (batch, query) row at a time."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    W, U, v = f64(layer.query.kernel[...]), f64(layer.key.kernel[...]), f64(layer.v[...])
    b = f64(layer.query.bias[...]) if layer.query.bias is not None else 0.0
    query, context = f64(query), f64(context)
    values = context if values is None else f64(values)
    ok = np.ones((B, T, S), bool)
    if mask is not None:
        ok &= np.broadcast_to(np.asarray(mask), (B, T, S))
    if lengths is not None:
        ok &= (np.arange(S)[None, :] < np.asarray(lengths)[:, None])[:, None, :]
    weights = np.zeros((B, T, S))
    for n in range(B):
        for i in range(T):
            scores = np.array(
                [v @ np.tanh(W.T @ query[n, i] + b + U.T @ context[n, j]) for j in range(S)]
            )
            if ok[n, i].any():
                e = np.where(ok[n, i], np.exp(scores - scores[ok[n, i]].max()), 0.0)
                weights[n, i] = e / e.sum()
    return np.einsum("bts,bsd->btd", weights, values), weights, ok


def _layer(**kwargs):
    return AdditiveAttention(DQ, DK, hidden_features=A, rngs=nnx.Rngs(0), **kwargs)


def _mask(shape=(B, T, S), seed=4):
    return jax.random.bernoulli(jax.random.key(seed), 0.6, shape)


@pytest.mark.parametrize(
    "case",
    [
        "plain",
        "mask_BTS",
        "mask_TS",
        "mask_B1S",
        "lengths",
        "mask_and_lengths",
        "values",
        "no_bias",
    ],
)
def test_equals_float64_numpy_reference(case):
    query, context, values = _inputs()
    layer = _layer(use_bias=case != "no_bias")
    kw = {}
    if case.startswith("mask"):
        shape = {"mask_TS": (T, S), "mask_B1S": (B, 1, S)}.get(case, (B, T, S))
        kw["mask"] = _mask(shape)
    if case in ("lengths", "mask_and_lengths"):
        kw["key_value_seq_lengths"] = jnp.array([3, 7])
    if case == "values":
        kw["values"] = values
    want, _, _ = _reference(
        layer,
        query,
        context,
        values=kw.get("values"),
        mask=kw.get("mask"),
        lengths=kw.get("key_value_seq_lengths"),
    )
    out = layer(query, context, **kw)
    assert out.shape == want.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)


def test_default_hidden_features_is_key_features():
    layer = AdditiveAttention(DQ, DK, rngs=nnx.Rngs(0))
    assert layer.query.kernel.shape == (DQ, DK) and layer.v.shape == (DK,)


def test_fully_masked_rows_give_zeros_and_zero_finite_gradients():
    query, context, values = _inputs()
    layer = _layer()
    mask = jnp.ones((B, T, S), bool).at[0, 2].set(False)
    lengths = jnp.array([S, 0])  # every row of example 1 is empty

    def loss(layer, query, context):
        out = layer(query, context, mask=mask, key_value_seq_lengths=lengths, values=values)
        return jnp.sum(out**2), out

    # Jitted only for speed: one compile instead of one per eager primitive.
    grad_fn = nnx.jit(nnx.grad(loss, argnums=(0, 1, 2), has_aux=True))
    (g_layer, g_query, g_context), out = grad_fn(layer, query, context)
    assert jnp.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 2], 0.0)
    np.testing.assert_array_equal(out[1], 0.0)
    for path, g in jax.tree_util.tree_leaves_with_path(nnx.state(g_layer, nnx.Param)):
        assert jnp.isfinite(g).all(), f"non-finite gradient at {path}"
    assert jnp.isfinite(g_query).all() and jnp.isfinite(g_context).all()
    np.testing.assert_array_equal(g_query[0, 2], 0.0)
    np.testing.assert_array_equal(g_query[1], 0.0)
    np.testing.assert_array_equal(g_context[1], 0.0)
    assert np.abs(np.asarray(g_query[0, :2])).max() > 0


@pytest.mark.parametrize("use_bias", [True, False])
def test_every_parameter_gets_a_gradient(use_bias):
    query, context, _ = _inputs()
    layer = _layer(use_bias=use_bias)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(query, context) ** 2)))(layer)
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param))
    assert len(leaves) == (4 if use_bias else 3)
    for path, g in leaves:
        assert np.abs(np.asarray(g)).max() > 0, f"no gradient reaches {path}"


def test_jit_and_vmap_equal_eager():
    query, context, _ = _inputs()
    layer = _layer()
    mask = _mask()
    eager = layer(query, context, mask=mask)
    jitted = nnx.jit(lambda m, q, c, k: m(q, c, mask=k))(layer, query, context, mask)
    np.testing.assert_allclose(jitted, eager, atol=1e-6, rtol=1e-6)
    # A leading ensemble axis E over inputs, same layer: each slice equals its own call.
    query_E, context_E, _ = _inputs(seed=1)
    query_E, context_E = jnp.stack([query, query_E]), jnp.stack([context, context_E])
    mapped = jax.vmap(lambda q, c: layer(q, c, mask=mask))(query_E, context_E)
    for e in range(2):
        np.testing.assert_allclose(
            mapped[e], layer(query_E[e], context_E[e], mask=mask), atol=1e-6, rtol=1e-6
        )


@pytest.mark.parametrize("jit", [False, True])
def test_recorded_weights_sum_to_one_over_unmasked_keys_and_equal_the_reference(jit):
    query, context, _ = _inputs()
    layer = _layer(record_weights=True)
    mask = _mask().at[0, 1].set(False)
    lengths = jnp.array([4, 6])
    forward = nnx.capture(
        lambda m, q, c: m(q, c, mask=mask, key_value_seq_lengths=lengths), nnx.Intermediate
    )
    forward = nnx.jit(forward) if jit else forward
    _, intermediates = forward(layer, query, context)
    (weights,) = intermediates["attention_weights"].get_value()
    _, want, ok = _reference(layer, query, context, mask=mask, lengths=lengths)
    assert weights.shape == (B, T, S) and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights, want, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[~ok], 0.0)
    sums = np.asarray(weights).sum(-1)
    np.testing.assert_allclose(sums[ok.any(-1)], 1.0, atol=1e-6)
    np.testing.assert_array_equal(sums[~ok.any(-1)], 0.0)
    assert "attention_weights" not in nnx.state(layer)


def test_nothing_recorded_without_record_weights():
    query, context, _ = _inputs()
    _, intermediates = nnx.capture(_layer(), nnx.Intermediate)(query, context)
    assert "attention_weights" not in intermediates


def test_bfloat16_compute_with_float32_params():
    query, context, values = _inputs()
    layer32 = _layer()
    layer16 = _layer(dtype=jnp.bfloat16, record_weights=True)
    for _, p in jax.tree_util.tree_leaves_with_path(nnx.state(layer16, nnx.Param)):
        assert p.dtype == jnp.float32
    mask = _mask()
    out16, intermediates = nnx.capture(layer16, nnx.Intermediate)(
        query, context, mask=mask, values=values
    )
    assert out16.dtype == jnp.bfloat16
    (weights,) = intermediates["attention_weights"].get_value()
    assert weights.dtype == jnp.float32  # the softmax ran in float32
    want = layer32(query, context, mask=mask, values=values)
    np.testing.assert_allclose(out16.astype(jnp.float32), want, atol=3e-2, rtol=3e-2)
    loss = lambda m: jnp.sum(m(query, context).astype(jnp.float32) ** 2)  # noqa: E731
    grads = nnx.jit(nnx.grad(loss))(_layer(dtype=jnp.bfloat16))
    for _, g in jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param)):
        assert g.dtype == jnp.float32 and jnp.isfinite(g).all()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(query=jnp.zeros((B, T, DQ + 1))), "query_features"),
        (dict(query=jnp.zeros((T, DQ))), "query must have shape"),
        (dict(context=jnp.zeros((B, S, DK + 1))), "key_features"),
        (dict(context=jnp.zeros((B + 1, S, DK))), "same batch size"),
        (dict(values=jnp.zeros((B, S + 1, DV))), "values must have shape"),
        (dict(values=jnp.zeros((B, S))), "values must have shape"),
        (dict(key_value_seq_lengths=jnp.array([3, 4, 5])), "key_value_seq_lengths"),
        (dict(key_value_seq_lengths=jnp.array([3.0, 4.0])), "integer"),
        (dict(mask=jnp.ones((B, T, S), jnp.int32)), "mask must be bool"),
        (dict(mask=jnp.ones((B, T, S + 1), bool)), r"broadcastable to \[B, T, S\]"),
        (dict(mask=jnp.ones((1, B, T, S), bool)), r"broadcastable to \[B, T, S\]"),
    ],
    ids=[
        "query_features_mismatch",
        "query_not_3d",
        "key_features_mismatch",
        "batch_mismatch",
        "values_length_mismatch",
        "values_not_3d",
        "lengths_wrong_shape",
        "lengths_not_integer",
        "mask_not_bool",
        "mask_not_broadcastable",
        "mask_4d",
    ],
)
def test_bad_inputs_raise(change, match):
    query, context, _ = _inputs()
    args = {"query": query, "context": context, **change}
    with pytest.raises(ValueError, match=match):
        _layer()(args.pop("query"), args.pop("context"), **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(hidden_features=0), "hidden_features"), (dict(key_features=-1), "key_features")],
    ids=["zero_hidden_features", "negative_key_features"],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdditiveAttention(**{"query_features": DQ, "key_features": DK, **kwargs}, rngs=nnx.Rngs(0))
