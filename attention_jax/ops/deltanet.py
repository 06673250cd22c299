"""DeltaNet (Schlag et al. 2021; chunkwise training by Yang et al. 2024): linear attention whose
state is edited by the delta rule, S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,
o_t = scale * q_t^T S_t."""

from __future__ import annotations

import jax

from attention_jax.ops import contract, delta_rule


def deltanet(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    beta: jax.Array,
    chunk_size: int = delta_rule.DEFAULT_CHUNK,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    logits_soft_cap=None,
) -> jax.Array:
    """Causal DeltaNet in O(T * chunk_size * (chunk_size + H)) time and O(T * chunk_size) memory.

    Args:
      query: [B, T, N, Hk].
      key: [B, T, K, Hk] with N % K == 0, used as given (the layer L2-normalises keys, which
        keeps the state bounded).
      value: [B, T, K, Hv].
      beta: [B, T, K] write strengths in [0, 1] (the layer's sigmoid of a projection).
      chunk_size: tokens per chunk of the chunkwise form.
      scale: output scale, default Hk^-1/2.
      is_causal: must be True.
      query_seq_lengths, key_value_seq_lengths: as in the op contract.
      bias, mask, local_window_size, segment ids, logits_soft_cap: refused (ValueError).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    return delta_rule.delta_rule_attention(
        "deltanet", query, key, value, beta, chunk_size=chunk_size, **contract.forwarded(locals())
    )
