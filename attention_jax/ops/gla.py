"""Gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training"): a data-dependent decay per key dimension,
S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale * q_t^T S_t."""

from __future__ import annotations

import jax

from attention_jax.ops import contract, decayed_linear


def gla(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    log_decay: jax.Array,
    chunk_size: int = decayed_linear.DEFAULT_VECTOR_CHUNK,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    logits_soft_cap=None,
) -> jax.Array:
    """Causal GLA in O(T * chunk_size * Hk) time and O(T * chunk_size) memory.

    Args:
      query: [B, T, N, Hk].
      key: [B, T, K, Hk] with N % K == 0.
      value: [B, T, K, Hv].
      log_decay: g [B, T, K, Hk], each <= 0 (the layer computes it from its input, e.g. a
        log-sigmoid of a low-rank projection divided by a temperature).
      chunk_size: tokens per chunk of the chunkwise form.
      scale: output scale, default Hk^-1/2.
      is_causal: must be True.
      query_seq_lengths, key_value_seq_lengths: as in the op contract.
      bias, mask, local_window_size, segment ids, logits_soft_cap: refused (ValueError).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    dims = contract.check_qkv("gla", query, key, value)
    want = (dims.batch, dims.kv_len, dims.num_kv_heads, dims.head_dim)
    g = decayed_linear.check_log_decay("gla", "log_decay", log_decay, want)
    return decayed_linear.decayed_attention(
        "gla",
        query,
        key,
        value,
        contract.heads_major_kv(g)[:, :, None],
        chunk_size=chunk_size,
        **contract.forwarded(locals()),
    )
