"""Masks as data: which (query, key) pairs may attend, evaluated one block at a time.

Causal and sliding-window structure is static, so a blocked kind can drop whole blocks before
tracing (`active_blocks`); lengths, segment ids and a dense mask are arrays, evaluated per block
(`allowed`). The dense kind evaluates the same spec as a single block covering everything.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attention_jax.ops import contract


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Every mask form of one call; array fields are per batch example.

    Attributes:
      is_causal: key j is visible to query i only if j <= i.
      window: (left, right): key j is visible to query i only if i - left <= j <= i + right.
      kv_valid: static count of real keys when key blocks were padded past it.
      global_positions: static token positions exempt from the window: they see every key and
        every query sees them (Longformer global attention).
      q_lengths: [B] query rows at or past the length see nothing (padding).
      kv_lengths: [B] keys at or past the length are hidden.
      q_segments: [B, T] packed-sequence ids of queries; pairs must share an id.
      kv_segments: [B, S] packed-sequence ids of keys.
      dense: bool [B|1, K|1, G|1, T, S], True = may attend.
      logits_soft_cap: c squashes logits to c * tanh(logits / c) before bias and masks
        (Gemma 2); not a mask, but static and needed in every block, like the masks.
    """

    is_causal: bool = False
    window: tuple[int, int] | None = None
    kv_valid: int | None = None
    global_positions: tuple[int, ...] | None = None
    q_lengths: jax.Array | None = None
    kv_lengths: jax.Array | None = None
    q_segments: jax.Array | None = None
    kv_segments: jax.Array | None = None
    dense: jax.Array | None = None
    logits_soft_cap: float | None = None


jax.tree_util.register_dataclass(
    MaskSpec,
    data_fields=["q_lengths", "kv_lengths", "q_segments", "kv_segments", "dense"],
    meta_fields=["is_causal", "window", "kv_valid", "global_positions", "logits_soft_cap"],
)


def build_spec(
    kind: str,
    dims: contract.Dims,
    *,
    mask,
    is_causal: bool,
    local_window_size,
    query_seq_lengths,
    key_value_seq_lengths,
    query_segment_ids,
    key_value_segment_ids,
) -> MaskSpec:
    """Checks every mask argument of the op contract and gathers them into one MaskSpec."""
    q_segments, kv_segments = contract.check_segment_ids(
        kind, query_segment_ids, key_value_segment_ids, dims
    )
    if not isinstance(is_causal, (bool, np.bool_)):
        raise ValueError(
            f"{kind}: is_causal must be a Python bool (static); got {is_causal!r}. A traced flag "
            "cannot choose which blocks to compute."
        )
    return MaskSpec(
        is_causal=bool(is_causal),
        window=contract.check_window(kind, local_window_size),
        q_lengths=contract.check_lengths(kind, "query_seq_lengths", query_seq_lengths, dims.batch),
        kv_lengths=contract.check_lengths(
            kind, "key_value_seq_lengths", key_value_seq_lengths, dims.batch
        ),
        q_segments=q_segments,
        kv_segments=kv_segments,
        dense=None if mask is None else contract.split_heads_4d(kind, "mask", mask, dims, "bool"),
    )


def _and(a, b):
    return b if a is None else a & b


def allowed(spec: MaskSpec, q_start, q_size: int, kv_start, kv_size: int) -> jax.Array | None:
    """Bool [B|1, K|1, G|1, q_size, kv_size] for one block, or None when nothing is masked.

    Args:
      spec: the call's masks.
      q_start: first query position of the block (may be traced).
      q_size: static number of queries in the block.
      kv_start: first key position of the block (may be traced).
      kv_size: static number of keys in the block.
    """
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, (q_size, 1), 0)
    kv_pos = kv_start + lax.broadcasted_iota(jnp.int32, (1, kv_size), 1)
    ok = None
    if spec.is_causal:
        ok = _and(ok, kv_pos <= q_pos)
    if spec.window is not None:
        left, right = spec.window
        in_window = (kv_pos >= q_pos - left) & (kv_pos <= q_pos + right)
        if spec.global_positions:
            positions = jnp.asarray(spec.global_positions, jnp.int32)
            in_window |= jnp.isin(q_pos, positions) | jnp.isin(kv_pos, positions)
        ok = _and(ok, in_window)
    if spec.kv_valid is not None:
        ok = _and(ok, kv_pos < spec.kv_valid)
    if ok is not None:
        ok = ok[None, None, None]
    if spec.kv_lengths is not None:
        ok = _and(ok, kv_pos[None, None, None] < spec.kv_lengths[:, None, None, None, None])
    if spec.q_lengths is not None:
        ok = _and(ok, q_pos[None, None, None] < spec.q_lengths[:, None, None, None, None])
    if spec.q_segments is not None:
        q_seg = lax.dynamic_slice_in_dim(spec.q_segments, q_start, q_size, axis=1)
        kv_seg = lax.dynamic_slice_in_dim(spec.kv_segments, kv_start, kv_size, axis=1)
        ok = _and(ok, (q_seg[:, :, None] == kv_seg[:, None, :])[:, None, None])
    if spec.dense is not None:
        ok = _and(ok, block_of(spec.dense, q_start, q_size, kv_start, kv_size))
    return ok


def block_of(x, q_start, q_size: int, kv_start, kv_size: int) -> jax.Array:
    """The [.., q_size, kv_size] block of a [.., T|1, S|1] array; size-1 axes stay broadcast."""
    if x.shape[3] != 1:
        x = lax.dynamic_slice_in_dim(x, q_start, q_size, axis=3)
    if x.shape[4] != 1:
        x = lax.dynamic_slice_in_dim(x, kv_start, kv_size, axis=4)
    return x


def add_to_block(total, block, q_start, kv_start) -> jax.Array:
    """Adds a [B, K, G, q, kv] block into `total` [B|1, K|1, G|1, T|1, S|1], summing broadcasts."""
    summed = block.sum(axis=tuple(a for a in range(5) if total.shape[a] == 1), keepdims=True)
    starts = (
        0,
        0,
        0,
        q_start if total.shape[3] != 1 else 0,
        kv_start if total.shape[4] != 1 else 0,
    )
    current = lax.dynamic_slice(total, starts, summed.shape)
    return lax.dynamic_update_slice(total, current + summed, starts)


def active_blocks(
    spec: MaskSpec, num_q_blocks: int, num_kv_blocks: int, block_q: int, block_kv: int
) -> np.ndarray:
    """Static bool [num_q_blocks, num_kv_blocks]: False where causal/window/padding hide a block.

    Array masks (lengths, segments, dense) are not looked at: they are not known at trace time.
    """
    q_first = np.arange(num_q_blocks)[:, None] * block_q
    q_last = q_first + block_q - 1
    kv_first = np.arange(num_kv_blocks)[None, :] * block_kv
    kv_last = kv_first + block_kv - 1
    active = np.ones((num_q_blocks, num_kv_blocks), bool)
    if spec.is_causal:
        active &= kv_first <= q_last
    if spec.window is not None:
        left, right = spec.window
        in_window = (kv_last >= q_first - left) & (kv_first <= q_last + right)
        for p in spec.global_positions or ():
            in_window[p // block_q, :] = True
            in_window[:, p // block_kv] = True
        active &= in_window
    if spec.kv_valid is not None:
        active &= kv_first < spec.kv_valid
    return active
