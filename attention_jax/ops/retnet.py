"""RetNet's retention (Sun et al. 2023, "Retentive Network"): linear attention whose state
decays by a fixed gamma per head, S_t = gamma S_{t-1} + k_t v_t^T, o_t = scale * q_t^T S_t."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.ops import contract, decayed_linear


def retnet_decays(num_heads: int) -> np.ndarray:
    """RetNet's decays gamma_h = 1 - 2^(-5-h), h = 0..num_heads-1: head 0 forgets fastest."""
    return 1.0 - 2.0 ** (-5.0 - np.arange(num_heads))


def retnet(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    decay: jax.Array | None = None,
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
    """Causal retention in O(T * chunk_size) time and memory.

    Args:
      query: [B, T, N, Hk].
      key: [B, T, K, Hk] with N % K == 0.
      value: [B, T, K, Hv].
      decay: gamma [N] in (0, 1], one per query head (under GQA each query head keeps its own
        state); default `retnet_decays(N)`.
      chunk_size: tokens per chunk of the chunkwise form.
      scale: output scale, default Hk^-1/2.
      is_causal: must be True.
      query_seq_lengths, key_value_seq_lengths: as in the op contract.
      bias, mask, local_window_size, segment ids, logits_soft_cap: refused (ValueError).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    dims = contract.check_qkv("retnet", query, key, value)
    N, K = dims.num_heads, dims.num_kv_heads
    gamma = retnet_decays(N) if decay is None else decay
    gamma = jnp.asarray(gamma)
    if gamma.shape != (N,) or not jnp.issubdtype(gamma.dtype, jnp.floating):
        raise ValueError(
            f"retnet: decay must be a float array of shape [num_heads] = [{N}]; got shape "
            f"{gamma.shape} and dtype {gamma.dtype}."
        )
    values = contract.concrete_values(gamma)
    if values is not None and not np.all((values > 0) & (values <= 1)):
        raise ValueError(f"retnet: decay must lie in (0, 1]; got {values}.")
    log_gamma = jnp.log(gamma.astype(contract.accumulation_dtype(query.dtype)))
    log_decay = jnp.broadcast_to(
        log_gamma.reshape(1, K, N // K, 1, 1), (1, K, N // K, dims.q_len, 1)
    )
    return decayed_linear.decayed_attention(
        "retnet",
        query,
        key,
        value,
        log_decay,
        chunk_size=chunk_size,
        **contract.forwarded(locals()),
    )
