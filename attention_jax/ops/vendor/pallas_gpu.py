"""`implementation='pallas_gpu'`: JAX's Pallas (Triton) flash attention for GPUs.

The kernel (jax.experimental.pallas.ops.gpu.attention.mha) does full or causal attention with
equal numbers of query and kv heads, equal q/k/v head dims and (for its backward pass) q_len ==
kv_len. GQA is served by repeating K and V per query head (memory, not FLOPs); lengths that are
not tile multiples are padded, with the padding hidden by segment ids.
"""

from __future__ import annotations

import jax.numpy as jnp

TILE = 128


def pallas_gpu_attention(query, key, value, *, scale, is_causal, interpret):
    """Runs the Pallas GPU kernel. Arguments are the op contract's, already checked.

    Args:
      query: [B, T, N, H]; key, value: [B, T, K, H].
      scale: a Python float.
      is_causal: bool.
      interpret: run in Pallas interpret mode (any platform).

    Returns:
      [B, T, N, H] in the query dtype.
    """
    from jax.experimental.pallas.ops.gpu import attention as kernel_lib

    B, T, N, _ = query.shape
    K = key.shape[2]
    if K != N:
        key, value = jnp.repeat(key, N // K, axis=2), jnp.repeat(value, N // K, axis=2)
    segment_ids = None
    if T % TILE:
        # Padding is its own segment: real queries never see padded keys.
        padded = -(-T // TILE) * TILE
        widths = ((0, 0), (0, padded - T), (0, 0), (0, 0))
        query, key, value = (jnp.pad(x, widths) for x in (query, key, value))
        segment_ids = jnp.broadcast_to((jnp.arange(padded) >= T).astype(jnp.int32), (B, padded))
    out = kernel_lib.mha(
        query,
        key,
        value,
        segment_ids,
        sm_scale=float(scale),
        causal=bool(is_causal),
        interpret=interpret,
    )
    return out[:, :T]
