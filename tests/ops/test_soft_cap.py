"""Logit soft capping (Gemma 2): every kind that takes it equals a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from tests.ops import reference as ref

B, T, N, K, H = 2, 12, 4, 2, 8
CAP = 2.0
LENGTHS = np.array([12, 7])
KINDS = {
    "dense": {},
    "flash": {"block_q": 4, "block_kv": 4},
    "local": {"local_window_size": (3, 1), "block_q": 4, "block_kv": 4},
    "block_sparse": {"block_size": 4, "layout": np.tri(3, dtype=bool)},
    "longformer": {"local_window_size": (2, 2), "global_positions": (0,), "block_q": 4},
    "bigbird": {"block_size": 4, "num_random_blocks": 1, "seed": 1},
}


def capped_attention_np(q, k, v, bias, allowed_BNTS):
    """Float64: softmax(cap * tanh(q.k / sqrt(H) / cap) + bias) over allowed keys, times v."""
    heads = np.arange(N) // (N // K)
    logits = np.einsum("btnh,bsnh->bnts", q, k[:, :, heads]) / np.sqrt(H)
    logits = CAP * np.tanh(logits / CAP) + bias
    logits = np.where(allowed_BNTS, logits, -np.inf)
    shift = np.max(logits, -1, keepdims=True)
    p = np.exp(logits - np.where(np.isfinite(shift), shift, 0.0))
    total = p.sum(-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return np.einsum("bnts,bsnh->btnh", p, v[:, :, heads])


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_soft_capped_output_and_gradients_match_the_reference(kind, is_causal):
    q, k, v = ref.random_qkv(0, B, T, T, N, K, H)
    q = q * 4.0  # large logits, so the cap really bends them
    bias = jax.random.normal(jax.random.key(1), (1, N, T, T))
    params = KINDS[kind]
    pattern_params = dict(params, is_causal=is_causal, num_heads=N) if kind == "bigbird" else params
    pattern = ops.pattern_mask(kind, T, T, **pattern_params)
    allowed = ref.allowed_np(
        B, T, T, N, pattern[None, None], is_causal=is_causal, key_value_seq_lengths=LENGTHS
    )

    def run(q, k, v, bias):
        return ops.attention(
            q,
            k,
            v,
            bias,
            kind=kind,
            is_causal=is_causal,
            key_value_seq_lengths=LENGTHS,
            logits_soft_cap=CAP,
            **params,
        )

    want = capped_attention_np(*(np.asarray(x, np.float64) for x in (q, k, v, bias)), allowed)
    np.testing.assert_allclose(run(q, k, v, bias), want, atol=2e-5)

    # Gradients against dense, whose capped logits autodiff differentiates directly.
    def loss(fn):
        return lambda *args: jnp.sum(jnp.sin(fn(*args)))

    def dense(q, k, v, bias):
        return ops.dense(
            q,
            k,
            v,
            bias,
            pattern[None, None],
            is_causal=is_causal,
            key_value_seq_lengths=LENGTHS,
            logits_soft_cap=CAP,
        )

    got = jax.grad(loss(run), argnums=(0, 1, 2, 3))(q, k, v, bias)
    expected = jax.grad(loss(dense), argnums=(0, 1, 2, 3))(q, k, v, bias)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=5e-5)


def test_the_cap_bounds_the_logits_and_rejects_bad_values():
    q, k, v = ref.random_qkv(0, 1, 4, 4, 1, 1, 8)
    _, weights = ops.dense(q * 100, k, v, logits_soft_cap=1.0, return_weights=True)
    # |logits| < 1, so no weight can exceed e^2 times another in its row.
    assert float((weights.max(-1) / weights.min(-1)).max()) <= np.exp(2.0) * (1 + 1e-5)
    for bad in (0.0, -1.0, "2", True):
        with pytest.raises(ValueError, match="logits_soft_cap"):
            ops.flash(q, k, v, logits_soft_cap=bad)
