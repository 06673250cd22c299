"""Sparse attention that computes only the blocks of its pattern: `local` and `block_sparse`.

Both run on flash's blocked engine (`flash.blocked_attention`), which walks a static list of
active (query block, key block) pairs: cost is proportional to the number of active blocks, and
inside them the online softmax is exact. A dense score matrix with a mask is only the reference
(`ops.pattern_mask` gives that mask, for tests and plots).
"""

from __future__ import annotations

import jax
import numpy as np

from attention_jax.ops import contract
from attention_jax.ops.flash import blocked_attention
from attention_jax.ops.vendor import dispatch

DEFAULT_LOCAL_BLOCK = 128
DEFAULT_SPARSE_BLOCK = 64


def local(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    local_window_size: int | tuple[int, int] | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    block_q: int = DEFAULT_LOCAL_BLOCK,
    block_kv: int = DEFAULT_LOCAL_BLOCK,
    implementation: str | None = None,
) -> jax.Array:
    """Sliding-window attention computed over the key blocks that meet the band, O(T * window).

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv].
      bias: optional float, broadcastable to [B, N, T, S].
      mask: optional bool, broadcastable to [B, N, T, S].
      local_window_size: required; int w or (left, right): query i sees keys i - left .. i + right
        (as in jax.nn.dot_product_attention). With is_causal, (left, 0) is the usual causal window.
      scale, is_causal, query_seq_lengths, key_value_seq_lengths, query_segment_ids,
        key_value_segment_ids, logits_soft_cap: as in `flash`.
      block_q: queries per block; smaller blocks hug the band tighter.
      block_kv: keys per block.
      implementation: 'xla' (our blocked engine) or a vendor kernel that skips the same blocks;
        None picks the fastest here (`ops.explain` says which).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    if local_window_size is None:
        raise ValueError(
            "local: local_window_size is required, e.g. local_window_size=(256, 0) for a causal "
            "window of 257 keys; use kind 'flash' for full attention."
        )
    arguments = contract.forwarded(locals())
    out = dispatch.attend("local", implementation, query, key, value, bias, mask, arguments)
    if out is not None:
        return out
    return blocked_attention(
        "local", query, key, value, block_q=block_q, block_kv=block_kv, **arguments
    )


def static_layout(kind: str, layout) -> np.ndarray:
    """A concrete bool block layout, [q_blocks, kv_blocks] or [heads, q_blocks, kv_blocks]."""
    if layout is None:
        raise ValueError(f"{kind}: layout, a bool [q_blocks, kv_blocks] array, is required.")
    if isinstance(layout, jax.core.Tracer):
        raise ValueError(
            f"{kind}: layout must be concrete (a NumPy array or nested lists), not traced: it "
            "decides which blocks are computed at trace time."
        )
    layout = np.asarray(layout)
    if layout.ndim not in (2, 3) or layout.dtype != np.bool_:
        raise ValueError(
            f"{kind}: layout must be a bool [q_blocks, kv_blocks] or [num_heads, q_blocks, "
            f"kv_blocks] array; got shape {layout.shape} and dtype {layout.dtype}."
        )
    return layout


def block_sparse(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    layout=None,
    block_size: int = DEFAULT_SPARSE_BLOCK,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """Attention over the blocks a static layout lists; cost is proportional to active blocks.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv].
      bias, mask, scale, is_causal, query_seq_lengths, key_value_seq_lengths, local_window_size,
        query_segment_ids, key_value_segment_ids, logits_soft_cap: as in `flash`, applied within
        the layout.
      layout: bool [ceil(T / block_size), ceil(S / block_size)]; True = the block is computed.
        Concrete (NumPy or lists). Shared by every head, or [N, ...] for one layout per query
        head: each head then walks its own blocks (heads are vmapped over padded block lists).
      block_size: tokens per block side; T and S need not be multiples (padding is internal).
      implementation: 'xla' (our blocked engine) or a vendor kernel that skips the same blocks;
        None picks the fastest here (`ops.explain` says which).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    arguments = contract.forwarded(locals())
    layout = static_layout("block_sparse", layout)
    block_size = contract.static_int("block_sparse", "block_size", block_size)
    out = dispatch.attend(
        "block_sparse",
        implementation,
        query,
        key,
        value,
        bias,
        mask,
        arguments,
        layout=layout,
        block=block_size,
    )
    if out is not None:
        return out
    return blocked_attention(
        "block_sparse",
        query,
        key,
        value,
        block_q=block_size,
        block_kv=block_size,
        layout=layout,
        **arguments,
    )


def _check_global_positions(positions, q_len: int, kv_len: int) -> tuple[int, ...]:
    """Sorted unique static token positions, each a valid query and key index."""
    if isinstance(positions, jax.core.Tracer):
        raise ValueError("longformer: global_positions must be concrete ints, not traced.")
    positions = np.asarray(positions if positions is not None else [], dtype=object).ravel()
    limit = min(q_len, kv_len)
    for p in positions:
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)):
            raise ValueError(f"longformer: global_positions must be ints; got {p!r}.")
        if not 0 <= p < limit:
            raise ValueError(
                f"longformer: global position {p} is out of range: it must index both a query "
                f"and a key, 0 <= p < min(q_len, kv_len) = {limit}."
            )
    return tuple(sorted({int(p) for p in positions}))


def longformer(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    local_window_size: int | tuple[int, int] | None = None,
    global_positions=(),
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    block_q: int = DEFAULT_LOCAL_BLOCK,
    block_kv: int = DEFAULT_LOCAL_BLOCK,
    implementation: str | None = None,
) -> jax.Array:
    """Longformer attention (Beltagy et al. 2020): a sliding window plus global tokens.

    Global tokens see every key and every query sees them; the rest see their window. Cost is
    O(T * window + T * len(global_positions) * block), computed over the blocks that meet the
    band, the global rows and the global columns.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv].
      bias, mask, scale, is_causal, query_seq_lengths, key_value_seq_lengths, query_segment_ids,
        key_value_segment_ids, logits_soft_cap: as in `flash`.
      local_window_size: required; int w or (left, right), as in `local`.
      global_positions: static token indices (e.g. [0] for a CLS token), each < min(T, S).
      block_q: queries per block.
      block_kv: keys per block.
      implementation: 'xla' (our blocked engine) or a vendor kernel that skips the same blocks;
        None picks the fastest here (`ops.explain` says which).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    if local_window_size is None:
        raise ValueError(
            "longformer: local_window_size is required, e.g. (256, 256); global tokens come on "
            "top of the window."
        )
    arguments = contract.forwarded(locals())
    positions = _check_global_positions(global_positions, query.shape[1], key.shape[1])
    out = dispatch.attend(
        "longformer",
        implementation,
        query,
        key,
        value,
        bias,
        mask,
        arguments,
        global_positions=positions,
    )
    if out is not None:
        return out
    return blocked_attention(
        "longformer",
        query,
        key,
        value,
        block_q=block_q,
        block_kv=block_kv,
        global_positions=positions,
        **arguments,
    )


def full_pattern(q_len: int, kv_len: int, *, block_q=None, block_kv=None) -> np.ndarray:
    """Exact kinds let every pair through; their block sizes change nothing."""
    del block_q, block_kv
    return np.ones((q_len, kv_len), bool)


def local_pattern(q_len: int, kv_len: int, *, local_window_size=None, block_q=None, block_kv=None):
    """The band i - left <= j <= i + right; block sizes change nothing."""
    del block_q, block_kv
    if local_window_size is None:
        raise ValueError("pattern_mask('local'): local_window_size is required.")
    left, right = contract.check_window("local", local_window_size)
    offset = np.arange(kv_len)[None, :] - np.arange(q_len)[:, None]
    return (offset >= -left) & (offset <= right)


def block_sparse_pattern(q_len: int, kv_len: int, *, layout=None, block_size=DEFAULT_SPARSE_BLOCK):
    """Every token pair inside a block the layout lists; [N, T, S] for a per-head layout."""
    layout = static_layout("block_sparse", layout)
    block = np.ones((block_size, block_size), bool)
    return np.kron(layout, block)[..., :q_len, :kv_len].astype(bool)


def longformer_pattern(
    q_len: int,
    kv_len: int,
    *,
    local_window_size=None,
    global_positions=(),
    block_q=None,
    block_kv=None,
):
    """The band, plus full rows and columns at the global positions."""
    pattern = local_pattern(q_len, kv_len, local_window_size=local_window_size)
    positions = list(_check_global_positions(global_positions, q_len, kv_len))
    pattern[positions, :] = True
    pattern[:, positions] = True
    return pattern
