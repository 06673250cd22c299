"""Dense softmax attention (Vaswani et al. 2017): the readable reference every other kind matches.

It materialises the [B, N, T, S] score matrix, so its memory is O(T * S); `flash` computes the
same function in O(T + S) memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attention_jax.ops import contract, masks


def masked_softmax(logits: jax.Array, ok: jax.Array | None) -> jax.Array:
    """Softmax over the last axis that gives all-zero rows where nothing is allowed."""
    if ok is not None:
        # A finite fill keeps exp() and its gradient free of inf - inf.
        logits = jnp.where(ok, logits, jnp.finfo(logits.dtype).min)
    # Softmax is shift-invariant, so the max needs no gradient; a row of -inf bias shifts by 0.
    row_max = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    row_max = jnp.where(jnp.isneginf(row_max), 0.0, row_max)
    unnormalised = jnp.exp(logits - row_max)
    if ok is not None:
        unnormalised = jnp.where(ok, unnormalised, 0.0)
    row_sum = unnormalised.sum(axis=-1, keepdims=True)
    return unnormalised / jnp.where(row_sum > 0, row_sum, 1.0)


def dense(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    return_weights: bool = False,
):
    """Exact softmax attention with the scores in memory.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv]; Hv may differ from H.
      bias: optional float, broadcastable to [B, N, T, S]; added to the scaled logits.
      mask: optional bool, broadcastable to [B, N, T, S]; True = may attend.
      scale: logit scale; default 1/sqrt(H).
      is_causal: key j is visible to query i only if j <= i.
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; keys past the length are hidden.
      local_window_size: int w or (left, right): query i sees keys i - left .. i + right.
      query_segment_ids: optional int [B, T]; with key_value_segment_ids [B, S], pairs attend
        only within the same segment (packed sequences).
      key_value_segment_ids: optional int [B, S].
      logits_soft_cap: c squashes the scaled logits to c * tanh(logits / c) before the bias
        (Gemma 2); default None leaves them as they are.
      return_weights: also return the attention probabilities [B, N, T, S] (float32, or float64
        for float64 inputs).

    Returns:
      [B, T, N, Hv] in the query dtype, or (output, weights) when return_weights is set.
    """
    dims = contract.check_qkv("dense", query, key, value)
    spec = masks.build_spec(
        "dense",
        dims,
        mask=mask,
        is_causal=is_causal,
        local_window_size=local_window_size,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
    )
    q_BKGTH = contract.heads_major_query(query, dims.num_kv_heads)
    k_BKSH = contract.heads_major_kv(key)
    v_BKSH = contract.heads_major_kv(value)

    scale = contract.check_scale("dense", scale, dims.head_dim)
    cap = contract.check_soft_cap("dense", logits_soft_cap)
    acc = contract.accumulation_dtype(query.dtype)
    logits_BKGTS = jnp.einsum(
        "bkgth,bksh->bkgts", q_BKGTH, k_BKSH, preferred_element_type=acc
    ) * jnp.asarray(scale, acc)
    logits_BKGTS = contract.soft_cap(logits_BKGTS, cap)
    if bias is not None:
        logits_BKGTS = logits_BKGTS + contract.split_heads_4d("dense", "bias", bias, dims, "float")
    ok = masks.allowed(spec, 0, dims.q_len, 0, dims.kv_len)
    probs_BKGTS = masked_softmax(logits_BKGTS, ok)

    out_BKGTH = jnp.einsum(
        "bkgts,bksh->bkgth",
        probs_BKGTS.astype(value.dtype),
        v_BKSH,
        preferred_element_type=acc,
    )
    out = contract.seq_major_output(out_BKGTH).astype(query.dtype)
    if not return_weights:
        return out
    B, K, G, T, S = probs_BKGTS.shape
    return out, probs_BKGTS.reshape(B, K * G, T, S)
