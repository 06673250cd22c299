"""Mixture of Block Attention (MoBA; Lu et al. 2025, also the selection branch of NSA).

Keys are cut into blocks of `block_size`. Each query scores every block by its dot product with
the block's mean key, keeps its `top_k` blocks and attends with one softmax over the keys of
those blocks only. A query's own block (the one holding its position) is always kept, as in
MoBA; causal queries never keep a block that starts after them (and see their own block
causally), so early queries with fewer than top_k eligible blocks use the ones they have. Ties
in the gate go to the lowest block index (`lax.top_k`'s order). With key lengths, blocks past
an example's length are never chosen and their padding is not in any mean.

The work follows the selection: every (query, chosen block) pair is a row, rows are grouped by
block with `grouped_matmul.plan_tiles`, and each tile of rows meets its block's keys and values
once. That is O(T * top_k * block_size) time and memory, never a [T, S] score matrix; each
kv head is one step of a checkpointed `lax.map`, so the backward pass recomputes a head's tiles
instead of keeping every head's. The selection is discrete (no gradient through the gate, as in
MoBA); gradients reach q, k and v through the attention. The partial attentions over the chosen
blocks are merged exactly by their log-sum-exp.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.ops import contract
from attention_jax.ops.dense import masked_softmax
from attention_jax.ops.grouped_matmul import from_tiles, plan_tiles, to_tiles

DEFAULT_BLOCK = 512
DEFAULT_TOP_K = 3
# Rows per tile: the padding costs at most num_blocks * TILE rows per kv head.
TILE = 64
_UNSUPPORTED = "MoBA selects blocks from q and k alone; use kind 'flash' or 'dense' for it"


def moba(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    block_size: int = DEFAULT_BLOCK,
    top_k: int = DEFAULT_TOP_K,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
) -> jax.Array:
    """Each query attends to the keys of its top_k key blocks, chosen by q . mean(k_block).

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0; each query head scores its kv head's blocks.
      value: [B, S, K, Hv].
      block_size: keys per block; the last block may be shorter.
      top_k: blocks per query: its own block and the top_k - 1 best others (causal: earlier
        ones); at most ceil(S / block_size).
      scale: logit scale; default 1/sqrt(H). The gate is unscaled (scaling keeps its order).
      is_causal: key j is visible to query i only if j <= i (top-left aligned).
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; keys past the length are hidden and blocks past
        it never chosen.
      bias, mask, local_window_size, query_segment_ids, key_value_segment_ids,
        logits_soft_cap: not supported (ValueError).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    contract.refuse(
        "moba",
        _UNSUPPORTED,
        bias=bias,
        mask=mask,
        local_window_size=local_window_size,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
        logits_soft_cap=logits_soft_cap,
    )
    dims = contract.check_qkv("moba", query, key, value)
    block_size = contract.static_int("moba", "block_size", block_size)
    top_k = contract.static_int("moba", "top_k", top_k)
    num_blocks = -(-dims.kv_len // block_size)
    if top_k > num_blocks:
        raise ValueError(
            f"moba: top_k ({top_k}) is larger than the number of key blocks ({num_blocks} = "
            f"ceil(kv_len {dims.kv_len} / block_size {block_size})); lower top_k or block_size."
        )
    if not isinstance(is_causal, (bool, np.bool_)):
        raise ValueError(f"moba: is_causal must be a Python bool (static); got {is_causal!r}.")
    scale = contract.check_scale("moba", scale, dims.head_dim)
    q_lengths = contract.check_lengths("moba", "query_seq_lengths", query_seq_lengths, dims.batch)
    kv_lengths = contract.check_lengths(
        "moba", "key_value_seq_lengths", key_value_seq_lengths, dims.batch
    )
    # Padding holds zeros, so a NaN there reaches no mean, score or gradient.
    query, key, value = contract.zero_padding(query, key, value, q_lengths, kv_lengths)
    acc = contract.accumulation_dtype(query.dtype)
    B, K, G, T = dims.batch, dims.num_kv_heads, dims.group, dims.q_len
    if kv_lengths is None:
        kv_lengths = jnp.full((B,), dims.kv_len, jnp.int32)
    padded = num_blocks * block_size - dims.kv_len
    # [B * K, ...]: one kv head of one example per step of the map.
    q = contract.heads_major_query(query, K).reshape(B * K, G, T, dims.head_dim)
    k, v = (
        jnp.pad(contract.heads_major_kv(x), ((0, 0), (0, 0), (0, padded), (0, 0))).reshape(
            B * K, num_blocks, block_size, x.shape[-1]
        )
        for x in (key, value)
    )

    def one_head(args):
        return _attend_one_head(*args, top_k=top_k, is_causal=bool(is_causal), scale=scale)

    kv_len = jnp.repeat(jnp.minimum(kv_lengths, dims.kv_len), K)
    out = jax.lax.map(jax.checkpoint(one_head), (q, k, v, kv_len))  # [B * K, G, T, Hv]
    out = contract.seq_major_output(out.reshape(B, K, G, T, out.shape[-1]).astype(acc))
    return contract.zero_rows_without_keys(out, q_lengths, None).astype(query.dtype)


def select_blocks(q_GTH, k_blocks_CLH, kv_len, *, top_k: int, is_causal: bool):
    """Each query's chosen blocks [G, T, top_k] and whether each choice is real (causal queries
    near the start have fewer eligible blocks than top_k).

    The gate is q . mean of the block's keys before kv_len, in float32; a query always takes its
    own block, never a block past kv_len and, causally, never a later one.
    """
    num_blocks, block_size = k_blocks_CLH.shape[:2]
    block_start = block_size * jnp.arange(num_blocks)
    counts = jnp.clip(kv_len - block_start, 1, block_size)
    means_CH = k_blocks_CLH.astype(jnp.float32).sum(axis=1) / counts[:, None]
    gate_GTC = jnp.einsum("gth,ch->gtc", q_GTH.astype(jnp.float32), means_CH)
    gate_GTC = jnp.where(block_start >= kv_len, -jnp.inf, gate_GTC)
    position_T = jnp.arange(q_GTH.shape[1])
    if is_causal:
        gate_GTC = jnp.where(block_start[None, :] > position_T[:, None], -jnp.inf, gate_GTC)
    own_T = jnp.minimum(position_T // block_size, num_blocks - 1)
    gate_GTC = jnp.where(jnp.arange(num_blocks) == own_T[:, None], jnp.inf, gate_GTC)
    values, chosen = jax.lax.top_k(jax.lax.stop_gradient(gate_GTC), top_k)
    # A NaN gate (NaN in q or k) counts as chosen, so the NaN reaches the output.
    return chosen, values != -jnp.inf


def _attend_one_head(q_GTH, k_CLH, v_CLV, kv_len, *, top_k, is_causal, scale):
    """MoBA for the G query heads of one kv head: [G, T, H] -> [G, T, Hv] (float32 or wider)."""
    G, T, H = q_GTH.shape
    num_blocks, block_size = k_CLH.shape[:2]
    acc = contract.accumulation_dtype(q_GTH.dtype)
    chosen_GTk, real_GTk = select_blocks(q_GTH, k_CLH, kv_len, top_k=top_k, is_causal=is_causal)
    # One row per (query head, query, choice), tiled by chosen block.
    plan = plan_tiles(chosen_GTk.reshape(-1), num_blocks, TILE)
    rows_q = jnp.broadcast_to(q_GTH[:, :, None, :], (G, T, top_k, H)).reshape(-1, H)
    position = jnp.broadcast_to(jnp.arange(T)[None, :, None], (G, T, top_k)).reshape(-1)
    q_tiles = to_tiles(plan, rows_q * jnp.asarray(scale, rows_q.dtype))
    # A padding row, or a choice that is not real, sees no key.
    visible_until = jnp.where(real_GTk.reshape(-1), position if is_causal else kv_len - 1, -1)
    until_tiles = to_tiles(plan, visible_until, fill=-1)
    key_position = block_size * plan.tile_group[:, None] + jnp.arange(block_size)  # [tiles, L]
    ok = (key_position[:, None, :] <= until_tiles[:, :, None]) & (key_position < kv_len)[:, None]
    logits = jnp.einsum("tih,tlh->til", q_tiles, k_CLH[plan.tile_group], preferred_element_type=acc)
    logits = jnp.where(ok, logits, -jnp.inf)
    # Rows with no visible key are told apart by `ok`, not by their sums, so that a NaN in the
    # data stays NaN instead of passing for an empty row.
    seen = ok.any(axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(seen, logits.max(axis=-1, keepdims=True), 0.0))
    weights = jnp.exp(logits - row_max)
    row_sum = weights.sum(axis=-1, keepdims=True)
    out_tiles = jnp.einsum(
        "til,tlv->tiv",
        weights.astype(v_CLV.dtype),
        v_CLV[plan.tile_group],
        preferred_element_type=acc,
    ) / jnp.where(seen, row_sum, 1.0)
    lse_tiles = jnp.where(seen, row_max + jnp.log(jnp.where(seen, row_sum, 1.0)), -jnp.inf)[..., 0]
    out_Ak = from_tiles(plan, out_tiles).reshape(G, T, top_k, -1)
    lse_Ak = from_tiles(plan, lse_tiles).reshape(G, T, top_k)
    # Disjoint blocks: merge the choices' partial softmaxes by their log-sum-exp.
    total = jax.nn.logsumexp(lse_Ak, axis=-1, keepdims=True)
    share = jnp.where(total == -jnp.inf, 0.0, jnp.exp(lse_Ak - total))
    return jnp.einsum("gtk,gtkv->gtv", share, out_Ak)


@dataclasses.dataclass(frozen=True)
class MoBACache:
    """MoBA's decoding state: every past key and value, and each key block's sum (its gate).

    Attributes:
      key: [B, K, num_blocks * block_size, H] keys by position (zeros past the last token).
      value: [B, K, num_blocks * block_size, Hv].
      key_sums: float32 [B, K, num_blocks, H], the sum of each block's keys so far.
      position: int32 [B], the position of the next token (the same for every example).
    """

    key: jax.Array
    value: jax.Array
    key_sums: jax.Array
    position: jax.Array


jax.tree_util.register_dataclass(
    MoBACache, data_fields=["key", "value", "key_sums", "position"], meta_fields=[]
)


def moba_state_init(
    batch, num_heads, num_kv_heads, head_dim, value_dim, *, max_len, block_size=DEFAULT_BLOCK
) -> MoBACache:
    """An empty cache for up to max_len tokens (rounded up to whole blocks)."""
    del num_heads
    block_size = contract.static_int("moba", "block_size", block_size)
    num_blocks = -(-max_len // block_size)
    size = num_blocks * block_size
    return MoBACache(
        key=jnp.zeros((batch, num_kv_heads, size, head_dim), jnp.float32),
        value=jnp.zeros((batch, num_kv_heads, size, value_dim), jnp.float32),
        key_sums=jnp.zeros((batch, num_kv_heads, num_blocks, head_dim), jnp.float32),
        position=jnp.zeros((batch,), jnp.int32),
    )


def moba_step(
    state: MoBACache,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    block_size: int = DEFAULT_BLOCK,
    top_k: int = DEFAULT_TOP_K,
    scale=None,
) -> tuple[jax.Array, MoBACache]:
    """Appends T tokens to the cache and attends each to its top_k blocks, as causal `moba` does.

    A new query scores the blocks by their key sums (past blocks are complete, so sum / block
    size is their mean), always takes its own block, and reads only the chosen blocks' keys and
    values: O(num_blocks * H + top_k * block_size * H) per token, whatever the cache holds.

    Args:
      state: the cache (`moba_state_init`).
      q: [B, T, N, H] new queries at positions state.position .. + T - 1 (positions applied).
      k: [B, T, K, H], v: [B, T, K, Hv] the new tokens' keys and values.
      block_size, top_k, scale: as in `moba` (block_size as at `moba_state_init`).

    Returns:
      ([B, T, N, Hv] in the query dtype, the advanced cache).
    """
    B, T, N, H = q.shape
    K = k.shape[2]
    G = N // K
    num_blocks = state.key_sums.shape[2]
    top_k = contract.static_int("moba", "top_k", top_k)
    if top_k > num_blocks:
        raise ValueError(
            f"moba: top_k ({top_k}) is larger than the cache's {num_blocks} blocks; lower top_k "
            "or init_cache with a larger max_len."
        )
    scale = contract.check_scale("moba", scale, H)
    acc = contract.accumulation_dtype(q.dtype)
    start = state.position[0]
    position_T = start + jnp.arange(T)
    k_BKTH = k.transpose(0, 2, 1, 3).astype(state.key.dtype)
    keys = jax.lax.dynamic_update_slice(state.key, k_BKTH, (0, 0, start, 0))
    values = jax.lax.dynamic_update_slice(
        state.value, v.transpose(0, 2, 1, 3).astype(state.value.dtype), (0, 0, start, 0)
    )
    key_sums = state.key_sums.at[:, :, position_T // block_size].add(k_BKTH.astype(jnp.float32))
    # Gate: past blocks are whole, so their mean is sum / block_size; the own block is forced.
    q_BKGTH = q.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)
    gate = jnp.einsum("bkgth,bkch->bkgtc", q_BKGTH.astype(jnp.float32), key_sums / block_size)
    block_start = block_size * jnp.arange(num_blocks)
    gate = jnp.where(block_start > position_T[:, None], -jnp.inf, gate)
    gate = jnp.where(jnp.arange(num_blocks) == (position_T // block_size)[:, None], jnp.inf, gate)
    gate_values, chosen = jax.lax.top_k(gate, top_k)  # [B, K, G, T, top_k]
    blocked = (B, K, num_blocks, block_size)
    gathered_k = _gather_blocks(keys.reshape(*blocked, H), chosen)
    gathered_v = _gather_blocks(values.reshape(*blocked, values.shape[-1]), chosen)
    logits = jnp.einsum(
        "bkgth,bkgtclh->bkgtcl",
        q_BKGTH * jnp.asarray(scale, q.dtype),
        gathered_k.astype(q.dtype),
        preferred_element_type=acc,
    )
    key_position = block_size * chosen[..., None] + jnp.arange(block_size)
    ok = (key_position <= position_T[:, None, None]) & (gate_values != -jnp.inf)[..., None]
    B_, K_, G_, T_, C_, L_ = logits.shape
    probs = masked_softmax(
        logits.reshape(B_, K_, G_, T_, C_ * L_), ok.reshape(B_, K_, G_, T_, C_ * L_)
    ).reshape(logits.shape)
    out = jnp.einsum(
        "bkgtcl,bkgtclv->bkgtv",
        probs.astype(q.dtype),
        gathered_v.astype(q.dtype),
        preferred_element_type=acc,
    )
    out = out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, -1).astype(q.dtype)
    return out, MoBACache(keys, values, key_sums, state.position + T)


def _gather_blocks(blocks_BKCLF, chosen_BKGTc):
    """The chosen blocks: [B, K, C, L, F] by indices [B, K, G, T, c] -> [B, K, G, T, c, L, F]."""
    B, K, G, T, c = chosen_BKGTc.shape
    flat = chosen_BKGTc.reshape(B, K, G * T * c)
    picked = jnp.take_along_axis(blocks_BKCLF, flat[..., None, None], axis=2)
    return picked.reshape(B, K, G, T, c, *blocks_BKCLF.shape[3:])
