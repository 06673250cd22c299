"""`implementation='pallas_tpu'`: the TPU's splash attention with the kind's pattern as its mask.

Splash attention (jax.experimental.pallas.ops.tpu.splash_attention) takes a static token mask
and, from it, a list of the (query block, key block) tiles that hold any allowed pair; it skips
the rest. Handing it each kind's exact pattern (causal, band, global rows and columns, a block
layout) therefore keeps the kind's cost: local, Longformer, BigBird and block-sparse skip the
same blocks they skip in our XLA engine.

The mask is evaluated lazily, one tile at a time (`TokenRule`), never as a [T, S] array.
Lengths become segment ids; rows past the query length and rows with no key come back as 0,
as the op contract says.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

from attention_jax.ops import contract

# Splash's lane width: key tiles are multiples of it; lengths are padded up to it.
LANES = 128


class TokenRule(mask_lib.Mask):
    """A splash mask (the `splash_attention_mask.Mask` protocol) computed from our kind's rule.

    Rows past `q_len` (padding) see only key 0, so no row is empty; keys past `kv_len` are hidden.
    """

    def __init__(self, shape, q_len, kv_len, is_causal, window, global_positions, layout, block):
        self._shape = tuple(shape)
        self._key = (self._shape, q_len, kv_len, is_causal, window, global_positions, block)
        self._layout = None if layout is None else np.asarray(layout, bool)
        self._hash = hash((*self._key, None if layout is None else self._layout.tobytes()))
        self.q_len, self.kv_len, self.is_causal, self.window = q_len, kv_len, is_causal, window
        self.global_positions, self.block = global_positions, block

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def __getitem__(self, index) -> np.ndarray:
        rows_slice, cols_slice = index
        rows = np.arange(*rows_slice.indices(self._shape[0]))[:, None]
        cols = np.arange(*cols_slice.indices(self._shape[1]))[None, :]
        return allowed(
            rows,
            cols,
            q_len=self.q_len,
            kv_len=self.kv_len,
            is_causal=self.is_causal,
            window=self.window,
            global_positions=self.global_positions,
            layout=self._layout,
            block=self.block,
        )

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, TokenRule)
            and self._key == other._key
            and np.array_equal(self._layout, other._layout)
        )

    def __hash__(self) -> int:
        return self._hash


def allowed(rows, cols, *, q_len, kv_len, is_causal, window, global_positions, layout, block):
    """Bool [rows, cols]: the pairs the kind lets through, on the padded [Tp, Sp] grid.

    The same rule as `masks.allowed` and `active_blocks` of the XLA engine: causal, then the
    window (global positions exempt from it in both directions), then the block layout.
    """
    ok = np.broadcast_to(cols < kv_len, np.broadcast_shapes(rows.shape, cols.shape)).copy()
    if is_causal:
        ok &= cols <= rows
    if window is not None:
        left, right = window
        in_window = (cols >= rows - left) & (cols <= rows + right)
        if global_positions:
            in_window |= np.isin(rows, global_positions) | np.isin(cols, global_positions)
        ok &= in_window
    if layout is not None:
        # Padded rows and columns read the last block; the lines below hide them anyway.
        q_blocks, kv_blocks = layout.shape
        ok &= layout[
            np.minimum(rows // block, q_blocks - 1), np.minimum(cols // block, kv_blocks - 1)
        ]
    return np.where(rows < q_len, ok, cols == 0)


def padded(length: int) -> int:
    return -(-length // LANES) * LANES


def _tile(length: int) -> int:
    """The largest of 512, 256, 128 that divides the padded length (bigger tiles run faster)."""
    return next(t for t in (512, 256, LANES) if length % t == 0)


def splash_attention(
    query,
    key,
    value,
    *,
    scale,
    is_causal,
    window,
    global_positions,
    layout,
    block,
    q_lengths,
    kv_lengths,
    q_segments,
    kv_segments,
    soft_cap,
    interpret,
):
    """Runs splash attention; arguments are the op contract's, already checked.

    Args:
      query: [B, T, N, H]; key [B, S, K, H]; value [B, S, K, Hv].
      scale: applied to the query (splash takes unscaled logits).
      is_causal, window, global_positions: the kind's structure (static).
      layout: static bool [T / block, S / block] or [N, ...], the kind's block layout, or None.
      block: the layout's block size.
      q_lengths, kv_lengths: int [B] or None; q_segments [B, T], kv_segments [B, S] or None.
      soft_cap: float or None.
      interpret: run in Pallas interpret mode (any platform).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    B, T, N, _ = query.shape
    S = key.shape[1]
    Tp, Sp = padded(T), padded(S)
    rule = functools.partial(
        TokenRule, (Tp, Sp), T, S, is_causal, window, tuple(global_positions or ())
    )
    if layout is not None and np.ndim(layout) == 3:
        heads = [rule(head_layout, block) for head_layout in np.asarray(layout)]
    else:
        heads = [rule(layout, block)] * N
    tq, tk = _tile(Tp), _tile(Sp)
    sizes = kernel_lib.BlockSizes(
        block_q=tq,
        block_kv=tk,
        block_kv_compute=tk,
        block_q_dkv=tq,
        block_kv_dkv=tk,
        block_kv_dkv_compute=tk,
        block_q_dq=tq,
        block_kv_dq=tk,
    )
    kernel = kernel_lib.make_splash_mha(
        mask_lib.MultiHeadMask(heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        attn_logits_soft_cap=soft_cap,
        interpret=interpret,
    )
    q = jnp.pad(query * jnp.asarray(scale, query.dtype), ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
    k = jnp.pad(key, ((0, 0), (0, Sp - S), (0, 0), (0, 0)))
    v = jnp.pad(value, ((0, 0), (0, Sp - S), (0, 0), (0, 0)))
    segments = _segments(B, T, S, Tp, Sp, q_lengths, kv_lengths, q_segments, kv_segments)

    def one_example(q, k, v, segment_ids):
        # Splash works heads-major, one example at a time: [N, T, H].
        ids = None if segment_ids is None else kernel_lib.SegmentIds(*segment_ids)
        out = kernel(q.transpose(1, 0, 2), k.transpose(1, 0, 2), v.transpose(1, 0, 2), ids)
        return out.transpose(1, 0, 2)

    out = jax.vmap(one_example)(q, k, v, segments)[:, :T]
    return contract.zero_rows_without_keys(out, q_lengths, kv_lengths).astype(query.dtype)


def _segments(B, T, S, Tp, Sp, q_lengths, kv_lengths, q_segments, kv_segments):
    """Segment ids [B, Tp], [B, Sp] carrying segment ids and key lengths, or None.

    A key past its example's length gets id -1, which no query has. Query rows past the length
    keep their segment: they are zeroed afterwards, and their gradients are zero.
    """
    if q_segments is None and kv_lengths is None:
        return None
    q_ids = jnp.zeros((B, T), jnp.int32) if q_segments is None else q_segments
    kv_ids = jnp.zeros((B, S), jnp.int32) if kv_segments is None else kv_segments
    if kv_lengths is not None:
        kv_ids = jnp.where(jnp.arange(S)[None, :] < kv_lengths[:, None], kv_ids, -1)
    # Padded rows see key 0 (TokenRule), so they share its segment; padded keys are hidden.
    q_ids = jnp.concatenate([q_ids, jnp.broadcast_to(kv_ids[:, :1], (B, Tp - T))], axis=1)
    kv_ids = jnp.pad(kv_ids, ((0, 0), (0, Sp - S)), constant_values=-2)
    return q_ids, kv_ids
