"""Attention maps of any kind, for plots: the matrix each kind applies to the values.

Every kind is linear in the values, out = A v, so attending to the one-hot values v = I
returns A itself: softmax probabilities (zero off a sparse kind's pattern), the normalised
kernel matrix phi(q) phi(k)^T of a kernelized kind, or softmax(q (E k)^T) F for Linformer (the
map over input positions, whose rows need not sum to 1). Each kind computes its own map with
its own code path, masks and lengths, so the map is exactly what the kind does. It costs one
call with S-wide values: for inspection, not for training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attention_jax.ops import contract
from attention_jax.ops.registry import get


def attention_map(kind: str, query: jax.Array, key: jax.Array, bias=None, mask=None, **kwargs):
    """The [B, N, T, S] matrix `kind` applies to the values, in float32.

    Args:
      kind: a name from `ops.names()`.
      query: [B, T, N, H].
      key: [B, S, K, H].
      bias, mask, **kwargs: as for the kind (is_causal, lengths, its variant parameters).
    """
    op = get(kind)  # a ValueError listing the kinds for an unknown name
    dims = contract.check_qkv(kind, query, key, key)
    one_hot_values = jnp.eye(dims.kv_len, dtype=jnp.float32)[None, :, None, :]
    one_hot_values = jnp.broadcast_to(
        one_hot_values, (dims.batch, dims.kv_len, dims.num_kv_heads, dims.kv_len)
    ).astype(query.dtype)
    out_BTNS = op(query, key, one_hot_values, bias, mask, **kwargs)
    return jnp.swapaxes(out_BTNS, 1, 2).astype(jnp.float32)
