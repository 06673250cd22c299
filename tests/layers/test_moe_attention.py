"""SwitchHead attention against a float64 NumPy computation, and over other attention kinds."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

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
