"""Checks the float64 NumPy reference itself, so the op tests do not trust it blindly."""

import itertools

import numpy as np
import pytest

from .reference import (
    allowed_np,
    attention_np,
    jax_nn_attention,
    random_masking,
    random_qkv,
    valid_rows,
    weights_np,
)

# jax.nn computes in float32 with float32 inputs; the reference in float64 on the same inputs.
F32_TOL = dict(atol=2e-5, rtol=2e-5)

CASES = [
    pytest.param(shape, forms, id=name)
    for name, shape, forms in [
        ("plain", (2, 9, 9, 4, 4, 16), ()),
        ("causal_T-lt-S", (2, 7, 11, 4, 2, 16), ("causal",)),
        ("causal_T-gt-S", (2, 11, 7, 4, 2, 16), ("causal",)),
        ("window-3-2", (2, 13, 13, 4, 1, 8), ("window",)),
        ("window-int_T-ne-S", (2, 9, 13, 2, 2, 8), ("window_int",)),
        ("lengths", (2, 9, 12, 4, 2, 8), ("q_lengths", "kv_lengths")),
        ("mask_bias_scale", (2, 6, 10, 4, 2, 8), ("mask", "bias", "scale")),
        ("segments", (2, 12, 10, 2, 1, 8), ("segments",)),
    ]
]


@pytest.mark.parametrize("shape, forms", CASES)
def test_reference_matches_jax_nn(shape, forms):
    """The reference equals jax.nn.dot_product_attention on rows with an allowed key."""
    B, T, S, N, K, H = shape
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    kwargs = random_masking(1, forms, B, T, S, N)
    valid_BTN = valid_rows(q, k, **kwargs)
    assert valid_BTN.any()
    expected = np.asarray(jax_nn_attention(q, k, v, **kwargs))
    np.testing.assert_allclose(
        attention_np(q, k, v, **kwargs)[valid_BTN], expected[valid_BTN], **F32_TOL
    )


def test_allowed_matches_loop_over_the_rules():
    """The vectorised mask equals the contract's rules spelled out one (b, n, t, s) at a time."""
    B, T, S, N = 2, 6, 8, 2
    rng = np.random.default_rng(0)
    mask = rng.random((B, N, T, S)) < 0.8
    q_len, kv_len = [4, 6], [8, 3]
    q_seg, kv_seg = np.sort(rng.integers(0, 2, (B, T))), np.sort(rng.integers(0, 2, (B, S)))
    allowed = allowed_np(
        B,
        T,
        S,
        N,
        mask,
        is_causal=True,
        query_seq_lengths=q_len,
        key_value_seq_lengths=kv_len,
        local_window_size=(2, 1),
        query_segment_ids=q_seg,
        key_value_segment_ids=kv_seg,
    )
    for b, n, t, s in itertools.product(range(B), range(N), range(T), range(S)):
        rule = (
            mask[b, n, t, s]
            and s <= t
            and t - 2 <= s <= t + 1
            and t < q_len[b]
            and s < kv_len[b]
            and q_seg[b, t] == kv_seg[b, s]
        )
        assert allowed[b, n, t, s] == rule, (b, n, t, s)


def test_single_allowed_key_copies_its_value():
    """With a window of (0, 0) each query sees only key t, so the output is value t."""
    q, k, v = random_qkv(0, 1, 5, 5, 4, 2, 8)
    out = attention_np(q, k, v, local_window_size=0)
    np.testing.assert_allclose(out, np.repeat(np.asarray(v, np.float64), 2, axis=2))


def test_zero_query_averages_allowed_values():
    """Equal logits give the plain mean of the allowed values; GQA head n reads kv head n // 2."""
    _, k, v = random_qkv(0, 1, 4, 6, 4, 2, 8)
    q = np.zeros((1, 4, 4, 8))
    out = attention_np(q, k, v, key_value_seq_lengths=[3])
    mean_v = np.asarray(v, np.float64)[:, :3].mean(axis=1)
    np.testing.assert_allclose(out[0, 2, 3], mean_v[0, 1])
    np.testing.assert_allclose(out[0, 0, 1], mean_v[0, 0])


def test_fully_masked_rows_are_zero():
    """A row with no allowed key gives zero weights and zero output, not NaN."""
    q, k, v = random_qkv(0, 2, 4, 5, 2, 1, 8)
    probs = weights_np(q, k, key_value_seq_lengths=[0, 5])
    out = attention_np(q, k, v, key_value_seq_lengths=[0, 5])
    assert np.all(probs[0] == 0) and np.all(out[0] == 0)
    np.testing.assert_allclose(probs[1].sum(-1), 1.0)
