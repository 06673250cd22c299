"""Decoding state for the attention layer: KV caches and the recurrent state of kernelized kinds.

Three strategies; each kind's record (`ops.kind(name).decoding`) names its own:
- 'kv': a cache of every past key and value (dense, flash and the sparse kinds, whose pattern
  row for the new token picks which cached keys it sees); memory O(max_len) per layer.
- 'window': a ring buffer of the last `left` keys for `local`, so memory and work per token are
  bounded by the window however long generation runs.
- 'recurrent': the O(1) state S = sum phi(k) v^T of kernelized kinds (`ops.linear_step`).
Linformer projects the whole key sequence at once, so it has no causal or incremental form.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import ops
from attention_jax.layers import positional
from attention_jax.ops import contract
from attention_jax.ops.dense import masked_softmax


def strategies() -> dict[str, str]:
    """{kind: 'kv', 'window' or 'recurrent'} for every registered kind that can decode."""
    records = (ops.kind(name) for name in ops.names())
    return {r.name: r.decoding.value for r in records if r.decoding is not ops.Decoding.NONE}


def strategy(kind: str) -> str:
    """'kv', 'window' or 'recurrent'; a ValueError for a kind that cannot decode."""
    record = ops.kind(kind)
    if record.decoding is ops.Decoding.NONE:
        raise ValueError(
            f"Kind {kind!r} cannot decode token by token: {record.no_decoding_reason}; kinds "
            f"that can: {sorted(strategies())}."
        )
    return record.decoding.value


def uses_pattern(kind: str) -> bool:
    """Whether `kind` decodes from a full KV cache through its sparsity pattern."""
    return ops.kind(kind).pattern_in_decoding


@dataclasses.dataclass(frozen=True)
class KVCache:
    """Past keys and values of one attention layer.

    Heads-major, and keys with positions last: both matmuls of a step then contract a
    non-minor axis of the cache, which XLA's CPU dot runs about 10x faster than q.k over the
    minor axis of [B, K, L, H] keys (one token against 8K keys: 0.45 ms against 4.4 ms).

    Attributes:
      key: [B, K, H, L] keys after positions (RoPE) were applied.
      value: [B, K, L, Hv].
      slot_positions: int32 [L], the position each slot holds, -1 while empty.
      index: int32 scalar, the position of the next token.
    """

    key: jax.Array
    value: jax.Array
    slot_positions: jax.Array
    index: jax.Array


jax.tree_util.register_dataclass(
    KVCache, data_fields=["key", "value", "slot_positions", "index"], meta_fields=[]
)


def kv_cache_init(batch, size, num_kv_heads, head_dim, value_dim, dtype) -> KVCache:
    """An empty cache of `size` slots."""
    return KVCache(
        key=jnp.zeros((batch, num_kv_heads, head_dim, size), dtype),
        value=jnp.zeros((batch, num_kv_heads, size, value_dim), dtype),
        slot_positions=jnp.full((size,), -1, jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


def _visible(q_pos, key_pos, window_left, pattern):
    """Bool [T, L] or [N, T, L]: which cached keys each new query may see."""
    ok = (key_pos[None, :] >= 0) & (key_pos[None, :] <= q_pos[:, None])
    if window_left is not None:
        ok &= key_pos[None, :] >= q_pos[:, None] - window_left
    if pattern is not None:
        # pattern [..., max_len, max_len] is the kind's causal pattern at full length.
        rows = jnp.take(jnp.asarray(pattern), q_pos, axis=-2)
        ok = ok & jnp.take(rows, jnp.maximum(key_pos, 0), axis=-1)
    return ok


def _cached_attention(q, keys, values, visible, bias, scale, logits_soft_cap):
    """Softmax attention of queries [B, T, N, H] over keys [B, K, H, L] and values [B, K, L, Hv].

    visible: bool [T, L] or [N, T, L]; bias: float [1, N, T, L] or None.
    """
    B, T, N, H = q.shape
    K, L = keys.shape[1], keys.shape[3]
    G = N // K
    acc = contract.accumulation_dtype(q.dtype)
    scale = contract.check_scale("decode", scale, H)
    q_BKGTH = q.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)
    logits = jnp.einsum(
        "bkgth,bkhl->bkgtl", q_BKGTH, keys.astype(q.dtype), preferred_element_type=acc
    ) * jnp.asarray(scale, acc)
    logits = contract.soft_cap(logits, logits_soft_cap)
    if bias is not None:
        logits = logits + bias.reshape(1, K, G, T, L).astype(acc)
    ok = visible.reshape(K, G, T, L) if visible.ndim == 3 else visible
    probs = masked_softmax(logits, ok)
    out = jnp.einsum(
        "bkgtl,bklh->bkgth",
        probs.astype(q.dtype),
        values.astype(q.dtype),
        preferred_element_type=acc,
    )
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, -1).astype(q.dtype)


def kv_cache_attend(
    cache: KVCache,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    ring: bool,
    window_left: int | None = None,
    pattern: np.ndarray | None = None,
    alibi: bool = False,
    scale=None,
    logits_soft_cap: float | None = None,
) -> tuple[jax.Array, KVCache]:
    """Attends T new tokens to the cache and themselves (causally); returns (out, new cache).

    Args:
      cache: the layer's cache.
      q: [B, T, N, H] new queries at positions index .. index + T - 1 (RoPE applied).
      k, v: [B, T, K, H] / [B, T, K, Hv] the new tokens' keys and values.
      ring: the cache is a ring buffer (window kinds): attend to cache + new, then keep the last.
      window_left: keys older than this many positions are hidden.
      pattern: bool [max_len, max_len] or [N, max_len, max_len], the kind's pattern.
      alibi: add ALiBi's -slope * |i - j| from the true positions.
      scale: logit scale; default 1/sqrt(H).
      logits_soft_cap: as in `ops.dense`.

    Computed here rather than by `ops.dense`: the cache is heads-major, and a step is one
    small query block against it, so no transpose of the cache is ever needed.
    """
    T, size = q.shape[1], cache.key.shape[3]
    q_pos = cache.index + jnp.arange(T, dtype=jnp.int32)
    k_BKHT = k.transpose(0, 2, 3, 1).astype(cache.key.dtype)
    v_BKTH = jnp.swapaxes(v, 1, 2).astype(cache.value.dtype)
    if ring:
        keys = jnp.concatenate([cache.key, k_BKHT], axis=3)
        values = jnp.concatenate([cache.value, v_BKTH], axis=2)
        key_pos = jnp.concatenate([cache.slot_positions, q_pos])
    else:
        keys = jax.lax.dynamic_update_slice(cache.key, k_BKHT, (0, 0, 0, cache.index))
        values = jax.lax.dynamic_update_slice(cache.value, v_BKTH, (0, 0, cache.index, 0))
        key_pos = jax.lax.dynamic_update_slice(cache.slot_positions, q_pos, (cache.index,))
    visible = _visible(q_pos, key_pos, window_left, pattern)
    bias = None
    if alibi:
        bias = positional.alibi_bias_at(q.shape[2], q_pos, jnp.maximum(key_pos, 0))
    out = _cached_attention(q, keys, values, visible, bias, scale, logits_soft_cap)
    if ring:
        # Only the last `size` tokens can be seen again; earlier ones would collide in the ring.
        kept = min(T, size)
        slots = q_pos[-kept:] % size
        keys = cache.key.at[..., slots].set(k_BKHT[..., -kept:])
        values = cache.value.at[:, :, slots].set(v_BKTH[:, :, -kept:])
        key_pos = cache.slot_positions.at[slots].set(q_pos[-kept:])
    return out, KVCache(keys, values, key_pos, cache.index + T)


def recurrent_attend(state: ops.LinearState, q, k, v, *, feature_map, scale=None):
    """Steps kernelized attention through T new tokens; returns (out [B, T, N, Hv], state)."""

    def step(carry, qkv_t):
        out_t, carry = ops.linear_step(carry, *qkv_t, feature_map=feature_map, scale=scale)
        return carry, out_t

    to_time_major = (jnp.swapaxes(x, 0, 1) for x in (q, k, v))
    state, out_TBNH = jax.lax.scan(step, state, tuple(to_time_major))
    return jnp.swapaxes(out_TBNH, 0, 1), state
