"""Linear attention whose state decays at every step: the engine behind retnet, gla and mamba2.

Per head, with no normaliser (unlike `linear`):

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T        o_t = scale * q_t^T S_t

g_t <= 0 is a log decay, one per key dimension (GLA) or one per head (RetNet's constant gamma,
Mamba-2's exp(a_t)), broadcast over the key dimensions.

Training uses the chunkwise form. Inside a chunk of C tokens the pair (i, j <= i) is weighted by
exp(b_i - b_j), b the cumulative log decay inside the chunk, so every weight is <= 1. The state
enters a chunk's queries decayed by exp(b_i) and leaves it decayed by exp(b_C), both <= 1, and
`lax.scan` carries it from chunk to chunk. Decays add up in float32 log space and only within a
chunk, so very negative gates over long sequences neither overflow nor underflow to NaN. No
[T, S] array exists: time and memory are O(T * C). A per-dimension decay weights each pair
dimension by dimension (a [C, C, Hk] block), so it runs with smaller chunks.

Decoding (`decay_state_init`, `decay_step`) is the recurrence itself: O(1) work per token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attention_jax.ops import contract, recurrent_contract
from attention_jax.ops.carry import chunks_leading, varying_like

DEFAULT_CHUNK = 64
# Per-dimension decays build a [C, C, Hk] weight per chunk: smaller chunks keep it cheap.
DEFAULT_VECTOR_CHUNK = 16


@dataclasses.dataclass(frozen=True)
class DecayState:
    """Decoding state of a decaying linear attention.

    Attributes:
      kv: [B, K, D, Hk, Hv], the state S per kv head, and per query head of a kv head's group
        (D = G) when the query heads decay at their own rates (RetNet under GQA); else D = 1.
      position: [B] int32, the tokens seen so far.
    """

    kv: jax.Array
    position: jax.Array


jax.tree_util.register_dataclass(DecayState, data_fields=["kv", "position"], meta_fields=[])


def decay_state_init(
    batch: int,
    num_kv_heads: int,
    head_dim: int,
    value_dim: int,
    *,
    decay_groups: int = 1,
    dtype=jnp.float32,
) -> DecayState:
    """An empty state: kv [batch, num_kv_heads, decay_groups, head_dim, value_dim] of zeros."""
    shape = (batch, num_kv_heads, decay_groups, head_dim, value_dim)
    return DecayState(jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))


def decay_step(
    state: DecayState, query, key, value, log_decay_BKDTE, *, scale
) -> tuple[jax.Array, DecayState]:
    """Feeds T new tokens through the recurrence, one at a time.

    Args:
      state: from `decay_state_init` or a previous step.
      query: [B, T, N, Hk]; key: [B, T, K, Hk]; value: [B, T, K, Hv].
      log_decay_BKDTE: float [B|1, K, D, T, E], E = 1 or Hk: log decay of each new token.
      scale: the output scale.

    Returns:
      ([B, T, N, Hv] in the query dtype, the advanced state).
    """
    acc = state.kv.dtype
    B, K, D = state.kv.shape[:3]
    q_BKGTH = contract.heads_major_query(query, K).astype(acc)
    G = q_BKGTH.shape[2]
    q_TBKDgH = jnp.moveaxis(q_BKGTH.reshape(B, K, D, G // D, *q_BKGTH.shape[3:]), 4, 0)
    k_TBKH = jnp.moveaxis(contract.heads_major_kv(key).astype(acc), 2, 0)
    v_TBKV = jnp.moveaxis(contract.heads_major_kv(value).astype(acc), 2, 0)
    g_TBKDE = jnp.moveaxis(log_decay_BKDTE.astype(acc), 3, 0)

    def one(kv_BKDHV, xs):
        q_BKDgH, k_BKH, v_BKV, g_BKDE = xs
        kv_BKDHV = kv_BKDHV * jnp.exp(g_BKDE)[..., None]
        kv_BKDHV = kv_BKDHV + jnp.einsum("bkh,bkv->bkhv", k_BKH, v_BKV)[:, :, None]
        return kv_BKDHV, scale * jnp.einsum("bkdgh,bkdhv->bkdgv", q_BKDgH, kv_BKDHV)

    kv, out_TBKDgV = lax.scan(one, state.kv, (q_TBKDgH, k_TBKH, v_TBKV, g_TBKDE))
    T = query.shape[1]
    out = jnp.moveaxis(out_TBKDgV, 0, 4).reshape(B, K, G, T, -1)
    return contract.seq_major_output(out).astype(query.dtype), DecayState(kv, state.position + T)


def _chunkwise(q_BKGTH, k_BKTH, v_BKTV, g_BKDTE, chunk: int, scale) -> jax.Array:
    """The causal outputs [B, K, G, T, Hv] of the decaying recurrence, chunk by chunk."""
    B, K, G, T, Hk = q_BKGTH.shape
    Hv, D, E = v_BKTV.shape[-1], g_BKDTE.shape[2], g_BKDTE.shape[-1]
    chunk = min(chunk, T)
    pad = -T % chunk

    # Padded tokens decay nothing and add nothing; they come after every real one.
    xs = (
        chunks_leading(q_BKGTH, 3, chunk),
        chunks_leading(k_BKTH, 2, chunk),
        chunks_leading(v_BKTV, 2, chunk),
        chunks_leading(g_BKDTE, 3, chunk),
    )
    causal_CC = jnp.tril(jnp.ones((chunk, chunk), bool))

    def one_chunk(kv_BKDHV, xs):
        q_BKGCH, k_BKCH, v_BKCV, g_BKDCE = xs
        q_BKDgCH = q_BKGCH.reshape(B, K, D, G // D, chunk, Hk)
        b_BKDCE = jnp.cumsum(g_BKDCE, axis=3)
        # Pairs j <= i of this chunk, weighted by the decay between them (masked before exp).
        between = b_BKDCE[:, :, :, :, None] - b_BKDCE[:, :, :, None, :]
        if E == 1:
            weight = jnp.exp(jnp.where(causal_CC, between[..., 0], -jnp.inf))
            scores = jnp.einsum("bkdgih,bkjh->bkdgij", q_BKDgCH, k_BKCH) * weight[:, :, :, None]
        else:
            weight = jnp.exp(jnp.where(causal_CC[..., None], between, -jnp.inf))
            scores = jnp.einsum("bkdgih,bkjh,bkdijh->bkdgij", q_BKDgCH, k_BKCH, weight)
        out = jnp.einsum("bkdgij,bkjv->bkdgiv", scores, v_BKCV)
        # Earlier chunks, through the state decayed up to each query.
        decayed_q = q_BKDgCH * jnp.exp(b_BKDCE)[:, :, :, None]
        out = out + jnp.einsum("bkdgih,bkdhv->bkdgiv", decayed_q, kv_BKDHV)
        last_BKD1E = b_BKDCE[:, :, :, -1:]
        decayed_k = k_BKCH[:, :, None] * jnp.exp(last_BKD1E - b_BKDCE)
        kv_BKDHV = kv_BKDHV * jnp.exp(last_BKD1E[:, :, :, 0, :, None])
        kv_BKDHV = kv_BKDHV + jnp.einsum("bkdjh,bkjv->bkdhv", decayed_k, v_BKCV)
        return kv_BKDHV, scale * out.reshape(B, K, G, chunk, Hv)

    init = jnp.zeros((B, K, D, Hk, Hv), q_BKGTH.dtype)
    _, out = lax.scan(one_chunk, varying_like(init, *xs), xs)
    # [chunks, B, K, G, C, Hv] -> [B, K, G, T, Hv]
    return jnp.moveaxis(out, 0, 3).reshape(B, K, G, T + pad, Hv)[:, :, :, :T]


def decayed_attention(kind: str, query, key, value, log_decay, **arguments) -> jax.Array:
    """The op contract around `_chunkwise`, for a kind whose gates are already in log space.

    Args:
      kind: the name used in error messages.
      query, key, value: [B, T, N, Hk], [B, T, K, Hk], [B, T, K, Hv].
      log_decay: float [B|1, K, D, T, E] (D = 1 or G, E = 1 or Hk), each <= 0.
      arguments: chunk_size and the contract's (`recurrent_contract.prepare`).
    """
    call = recurrent_contract.prepare(kind, query, key, value, **arguments)
    acc = call.q_BKGTH.dtype
    # Past its length a sequence's state is frozen: its padding neither adds nor decays.
    g_BTKDE = call.frozen_past_length(jnp.moveaxis(log_decay.astype(acc), 3, 1))
    out = _chunkwise(
        call.q_BKGTH, call.k_BKTH, call.v_BKTV, jnp.moveaxis(g_BTKDE, 1, 3), call.chunk, call.scale
    )
    return call.output(out)


def check_log_decay(kind: str, name: str, log_decay, want: tuple[int, ...]) -> jax.Array:
    """A float log-decay array of shape `want`; values > 0 (growth) are refused when concrete."""
    log_decay = jnp.asarray(log_decay)
    if log_decay.shape != want or not jnp.issubdtype(log_decay.dtype, jnp.floating):
        raise ValueError(
            f"{kind}: {name} must be a float array of shape {list(want)}; got shape "
            f"{log_decay.shape} and dtype {log_decay.dtype}."
        )
    values = contract.concrete_values(log_decay)
    if values is not None and np.any(values > 0):
        raise ValueError(
            f"{kind}: {name} must be <= 0 (a decay exp({name}) in (0, 1]); got a maximum of "
            f"{float(np.max(values))}."
        )
    return log_decay
