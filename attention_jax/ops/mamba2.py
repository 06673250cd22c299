"""Mamba-2's state-space duality core (Dao and Gu 2024, "Transformers are SSMs"): linear
attention whose state decays by a data-dependent scalar per head and step,
S_t = exp(a_t) S_{t-1} + k_t v_t^T, o_t = scale * q_t^T S_t (q, k, v are Mamba's C, B, x)."""

from __future__ import annotations

import jax

from attention_jax.ops import contract, decayed_linear


def mamba2(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    log_decay: jax.Array,
    chunk_size: int = decayed_linear.DEFAULT_CHUNK,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    logits_soft_cap=None,
) -> jax.Array:
    """Causal SSD in O(T * chunk_size) time and memory.

    Args:
      query: [B, T, N, Hk] (Mamba's C).
      key: [B, T, K, Hk] with N % K == 0 (Mamba's B, already scaled by dt).
      value: [B, T, K, Hv] (Mamba's x).
      log_decay: a [B, T, K], each <= 0 (the layer's -exp(A_log) * dt).
      chunk_size: tokens per chunk of the chunkwise form.
      scale: output scale, default Hk^-1/2 (Mamba-2 itself uses 1).
      is_causal: must be True.
      query_seq_lengths, key_value_seq_lengths: as in the op contract.
      bias, mask, local_window_size, segment ids, logits_soft_cap: refused (ValueError).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    dims = contract.check_qkv("mamba2", query, key, value)
    want = (dims.batch, dims.kv_len, dims.num_kv_heads)
    a = decayed_linear.check_log_decay("mamba2", "log_decay", log_decay, want)
    return decayed_linear.decayed_attention(
        "mamba2",
        query,
        key,
        value,
        a.transpose(0, 2, 1)[:, :, None, :, None],
        chunk_size=chunk_size,
        **contract.forwarded(locals()),
    )
