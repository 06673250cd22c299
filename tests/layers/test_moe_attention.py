"""SwitchHead attention against a float64 NumPy computation, and over other attention kinds."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import ops
from attention_jax.bench import count_flops
from attention_jax.layers.moe_attention import MoEAttention, top_k_gates


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _top_k_mask(gates, k):
    # The k largest, ties to the lower index.
    chosen = np.argsort(-gates, axis=-1, kind="stable")[..., :k]
    keep = np.zeros_like(gates)
    np.put_along_axis(keep, chosen, 1.0, axis=-1)
    return gates * keep


def switchhead_np(layer, x, *, k, causal, window=None, rotated=None):
    """The SwitchHead formula written out in float64; `rotated` gives q and k after RoPE."""
    p = {
        name: np.asarray(getattr(layer, name)[...], np.float64)
        for name in ("query", "key", "value_experts", "out_experts", "value_router", "out_router")
    }
    x = np.asarray(x, np.float64)
    q = np.einsum("btd,dnh->btnh", x, p["query"])
    kk = np.einsum("btd,dnh->btnh", x, p["key"])
    if rotated is not None:
        q, kk = rotated
    v_gates = _top_k_mask(_sigmoid(np.einsum("btd,dne->btne", x, p["value_router"])), k)
    v = np.einsum("btd,dneh,btne->btnh", x, p["value_experts"], v_gates)
    scores = np.einsum("btnh,bsnh->bnts", q, kk) / np.sqrt(q.shape[-1])
    T = x.shape[1]
    allowed = np.ones((T, T), bool)
    if causal:
        allowed &= np.tril(allowed)
    if window is not None:
        allowed &= np.subtract.outer(np.arange(T), np.arange(T)) <= window
    scores = np.where(allowed, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    o = np.einsum("bnts,bsnh->btnh", probs, v)
    o_gates = _top_k_mask(_sigmoid(np.einsum("btd,dne->btne", x, p["out_router"])), k)
    return np.einsum("btnh,nehd,btne->btd", o, p["out_experts"], o_gates)


X = np.random.default_rng(0).standard_normal((2, 9, 16)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_switchhead_matches_float64(k, causal):
    layer = MoEAttention(16, 2, num_experts=4, top_k=k, rngs=nnx.Rngs(0))
    got = layer(jnp.asarray(X), is_causal=causal)
    np.testing.assert_allclose(
        got, switchhead_np(layer, X, k=k, causal=causal), atol=2e-5, rtol=2e-5
    )


@pytest.mark.parametrize(
    "kind, kind_params, window",
    [("flash", {"block_q": 4, "block_kv": 4}, None), ("local", {"local_window_size": (3, 0)}, 3)],
)
def test_routed_heads_compose_with_other_kinds(kind, kind_params, window):
    layer = MoEAttention(
        16, 2, num_experts=3, top_k=2, kind=kind, kind_params=kind_params, rngs=nnx.Rngs(1)
    )
    got = layer(jnp.asarray(X), is_causal=True)
    want = switchhead_np(layer, X, k=2, causal=True, window=window)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("logits", ["random", "zeros", "saturated"])
def test_exactly_k_gates_are_open_even_with_ties(logits):
    values = {
        "random": np.random.default_rng(2).standard_normal((5, 3, 6)),
        "zeros": np.zeros((5, 3, 6)),  # every gate 0.5
        "saturated": np.full((5, 3, 6), 30.0),  # every sigmoid rounds to 1.0
    }[logits]
    gates = np.asarray(top_k_gates(jnp.asarray(values, jnp.float32), 2))
    np.testing.assert_array_equal(np.count_nonzero(gates, axis=-1), 2)


def test_bad_top_k_is_refused():
    with pytest.raises(ValueError, match="top_k <= num_experts"):
        MoEAttention(16, 2, num_experts=2, top_k=3, rngs=nnx.Rngs(0))


def test_projections_start_at_multi_head_attentions_scale():
    # Fan-in is D for every input projection and N*H for the output, whatever N and E are:
    # counting heads or experts as fan-in shrank the values 4x and stalled MQAR learning.
    D, N, E, H = 64, 8, 8, 16
    layer = MoEAttention(D, N, num_experts=E, top_k=2, head_dim=H, rngs=nnx.Rngs(0))
    for name in ("query", "key", "value_experts", "value_router", "out_router"):
        assert float(jnp.std(getattr(layer, name)[...])) == pytest.approx(D**-0.5, rel=0.1), name
    assert float(jnp.std(layer.out_experts[...])) == pytest.approx((N * H) ** -0.5, rel=0.1)


def _all_experts(layer, x, k, is_causal):
    """The SwitchHead formula computing every expert, in JAX, for gradients."""
    gates_v = top_k_gates(jnp.einsum("btd,dne->btne", x, layer.value_router[...]), k)
    gates_o = top_k_gates(jnp.einsum("btd,dne->btne", x, layer.out_router[...]), k)
    q = jnp.einsum("btd,dnh->btnh", x, layer.query[...])
    kk = jnp.einsum("btd,dnh->btnh", x, layer.key[...])
    v = jnp.einsum("btd,dneh,btne->btnh", x, layer.value_experts[...], gates_v)
    o = ops.dense(q, kk, v, is_causal=is_causal)
    return jnp.einsum("btnh,nehd,btne->btd", o, layer.out_experts[...], gates_o)


def test_gradients_equal_the_every_expert_formula():
    layer = MoEAttention(16, 2, num_experts=5, top_k=2, rngs=nnx.Rngs(3))
    x = jnp.asarray(X)
    cotangent = jnp.asarray(np.random.default_rng(4).standard_normal(X.shape), jnp.float32)

    def grads(fn):
        def loss(layer, x):
            return jnp.sum(fn(layer, x) * cotangent)

        return nnx.grad(loss, argnums=(0, 1))(layer, x)

    (got_params, got_x) = grads(lambda layer, x: layer(x, is_causal=True))
    (want_params, want_x) = grads(lambda layer, x: _all_experts(layer, x, 2, True))
    np.testing.assert_allclose(got_x, want_x, atol=2e-5, rtol=2e-5)
    for got, want in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_cost_follows_top_k_not_the_number_of_experts():
    """Forward FLOPs (counted from the jaxpr) at 16 experts within 1.2x of 4, at top-2."""
    x = jax.ShapeDtypeStruct((1, 1024, 512), jnp.float32)
    counts = {}
    for experts in (4, 16):
        layer = MoEAttention(512, 8, num_experts=experts, top_k=2, rngs=nnx.Rngs(0))
        counts[experts] = count_flops(functools.partial(layer, is_causal=True), x)
    assert counts[16] / counts[4] <= 1.2
