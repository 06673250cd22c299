"""Sparse Transformer attention (Child et al. 2019): a local part plus strided "summary" keys.

Two patterns, for self-attention (q_len == kv_len), with `l = stride`:
  'strided': key j is visible to query i if |i - j| < l (the band) or (i - j) % l == 0.
  'fixed':   key j is visible to query i if i // l == j // l (the same block of l tokens) or
             j % l >= l - summary_size (the last `summary_size` keys of every block).
`is_causal` and lengths come on top, as for every kind.

Each pattern is computed as two passes whose key sets do not overlap, merged exactly through
their log-sum-exp (`combine.merge`), so no pass ever looks at a pair outside the pattern's blocks:
  strided: the band on the blocked engine, then, per residue class r = i % l, attention along the
           class (a sequence of n / l tokens, batched over the l classes) with its diagonal hidden
           because the band already holds it. Work O(n * l + n^2 / l): O(n^1.5) at l = sqrt(n).
  fixed:   attention inside each block (the blocks batched), then attention of every query to the
           gathered summary keys of the other blocks. Work O(n * l + n^2 * summary_size / l).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax.ops import contract
from attention_jax.ops.combine import merge
from attention_jax.ops.flash import DEFAULT_BLOCK_KV, blocked_attention

PATTERNS = ("strided", "fixed")
DEFAULT_BAND_BLOCK = 128


def _check_params(pattern, stride, summary_size) -> tuple[int, int]:
    if pattern not in PATTERNS:
        raise ValueError(f"strided: pattern must be one of {PATTERNS}; got {pattern!r}.")
    stride = contract.static_int("strided", "stride", stride)
    if not isinstance(summary_size, (int, np.integer)) or not 1 <= summary_size <= stride:
        raise ValueError(
            f"strided: summary_size must be an int in [1, stride = {stride}]; got {summary_size!r}."
        )
    return int(stride), int(summary_size)


def _engine(
    query,
    key,
    value,
    *,
    scale,
    is_causal,
    q_lengths,
    kv_lengths,
    block,
    mask=None,
    local_window_size=None,
):
    """One exact pass on the blocked engine, returning (float32 output, lse)."""
    return blocked_attention(
        "strided",
        query,
        key,
        value,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=q_lengths,
        key_value_seq_lengths=kv_lengths,
        local_window_size=local_window_size,
        block_q=block,
        block_kv=block,
        return_lse=True,
    )


def _fold(x, groups: int, group_size: int, class_major: bool):
    """[B, groups * group_size, ...] -> [B * groups, group_size, ...] (contiguous groups), or
    [B * group_size, groups, ...] (residue classes: token a * group_size + r goes to class r)."""
    B = x.shape[0]
    x = x.reshape(B, groups, group_size, *x.shape[2:])
    if class_major:
        x = jnp.swapaxes(x, 1, 2)
        return x.reshape(B * group_size, groups, *x.shape[3:])
    return x.reshape(B * groups, group_size, *x.shape[3:])


def _unfold(x, batch: int, class_major: bool):
    """The inverse of `_fold` for an output [B * a, b, ...]."""
    x = x.reshape(batch, -1, *x.shape[1:])
    if class_major:
        x = jnp.swapaxes(x, 1, 2)
    return x.reshape(batch, -1, *x.shape[3:])


def _group_lengths(lengths, groups: int, stride: int, class_major: bool):
    """Valid-token counts [B * ...] per group for token lengths [B], in `_fold`'s order."""
    if class_major:
        # Class r holds tokens r, r + stride, ...: ceil((L - r) / stride) of them are below L.
        counts = -(-(lengths[:, None] - jnp.arange(stride)[None, :]) // stride)
        return jnp.clip(counts, 0, groups).reshape(-1)
    counts = lengths[:, None] - jnp.arange(groups)[None, :] * stride
    return jnp.clip(counts, 0, stride).reshape(-1)


def strided(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    stride: int | None = None,
    pattern: str = "strided",
    summary_size: int = 1,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    block_size: int = DEFAULT_BAND_BLOCK,
) -> jax.Array:
    """Sparse Transformer self-attention, 'strided' or 'fixed', in O(n * stride + n^2 / stride).

    Args:
      query: [B, T, N, H].
      key: [B, T, K, H] with N % K == 0 (self-attention: same length as the query).
      value: [B, T, K, Hv].
      bias, mask: not supported (the passes reorder the keys); raise ValueError.
      stride: required; the block length l of the pattern (sqrt(T) balances the two passes).
      pattern: 'strided' or 'fixed' (see the module docstring).
      summary_size: 'fixed' only: summary keys at the end of each block, 1 <= c <= stride.
      scale, is_causal, query_seq_lengths, key_value_seq_lengths: as in `flash`.
      local_window_size, query_segment_ids, key_value_segment_ids: not supported.
      block_size: block of the band pass ('strided'); smaller blocks hug the band tighter.

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    refuse = functools.partial(contract.refuse, "strided")
    refuse("the passes reorder keys; use block_sparse for a biased pattern", bias=bias)
    refuse("use dense or block_sparse with pattern_mask('strided', ...) & mask", mask=mask)
    refuse("the window is the stride", local_window_size=local_window_size)
    refuse(
        "packed sequences would straddle strides",
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
    )
    if stride is None:
        raise ValueError("strided: stride is required, e.g. stride=128 (about sqrt(seq_len)).")
    stride, summary_size = _check_params(pattern, stride, summary_size)
    dims = contract.check_qkv("strided", query, key, value)
    if dims.q_len != dims.kv_len:
        raise ValueError(
            f"strided: the Sparse Transformer patterns are for self-attention; q_len "
            f"{dims.q_len} != kv_len {dims.kv_len}."
        )
    kv_lengths = contract.check_lengths(
        "strided", "key_value_seq_lengths", key_value_seq_lengths, dims.batch
    )
    q_lengths = contract.check_lengths(
        "strided", "query_seq_lengths", query_seq_lengths, dims.batch
    )
    # Pad to whole strides; padded keys are hidden through the lengths.
    n = dims.q_len
    groups = -(-n // stride)
    padded = groups * stride
    if kv_lengths is None:
        kv_lengths = jnp.full((dims.batch,), n, jnp.int32)
    kv_lengths = jnp.minimum(kv_lengths, n)
    q, k, v = (jnp.pad(x, [(0, 0), (0, padded - n), (0, 0), (0, 0)]) for x in (query, key, value))
    common = dict(scale=scale, is_causal=is_causal)
    if pattern == "strided":
        parts = _strided_passes(q, k, v, stride, groups, q_lengths, kv_lengths, block_size, common)
    else:
        parts = _fixed_passes(q, k, v, stride, groups, summary_size, q_lengths, kv_lengths, common)
    return merge(parts)[:, :n].astype(query.dtype)


def _strided_passes(q, k, v, stride, groups, q_lengths, kv_lengths, block_size, common):
    band = _engine(
        q,
        k,
        v,
        local_window_size=(stride - 1, stride - 1),
        q_lengths=q_lengths,
        kv_lengths=kv_lengths,
        block=block_size,
        **common,
    )

    def by_class(x):
        return _fold(x, groups, stride, class_major=True)

    # Along a residue class, position a holds token a * stride + r: order (and so causality) is
    # kept, and the band already covers a == b.
    off_diagonal = ~jnp.eye(groups, dtype=bool)[None, None]
    along = _engine(
        by_class(q),
        by_class(k),
        by_class(v),
        mask=off_diagonal,
        q_lengths=None if q_lengths is None else _group_lengths(q_lengths, groups, stride, True),
        kv_lengths=_group_lengths(kv_lengths, groups, stride, True),
        block=DEFAULT_BLOCK_KV,
        **common,
    )
    batch = q.shape[0]
    return [band, tuple(_unfold(x, batch, class_major=True) for x in along)]


def _fixed_passes(q, k, v, stride, groups, summary_size, q_lengths, kv_lengths, common):
    def by_block(x):
        return _fold(x, groups, stride, class_major=False)

    batch = q.shape[0]
    inside = _engine(
        by_block(q),
        by_block(k),
        by_block(v),
        q_lengths=None if q_lengths is None else _group_lengths(q_lengths, groups, stride, False),
        kv_lengths=_group_lengths(kv_lengths, groups, stride, False),
        block=stride,
        **common,
    )
    inside = tuple(_unfold(x, batch, class_major=False) for x in inside)

    def summaries(x):
        x = x.reshape(batch, groups, stride, *x.shape[2:])[:, :, stride - summary_size :]
        return x.reshape(batch, groups * summary_size, *x.shape[3:])

    summary_positions = (
        np.arange(groups)[:, None] * stride + np.arange(stride - summary_size, stride)[None, :]
    ).ravel()
    # Query block a sees the summaries of the other blocks (its own are in `inside`); causally,
    # only those of earlier blocks, which all precede it.
    q_block = np.arange(groups * stride)[:, None] // stride
    kv_block = summary_positions[None, :] // stride
    visible = (kv_block < q_block) if common["is_causal"] else (kv_block != q_block)
    across = _engine(
        q,
        summaries(k),
        summaries(v),
        mask=jnp.asarray(visible)[None, None],
        q_lengths=q_lengths,
        # Summary keys are in position order, so the valid ones are a prefix.
        kv_lengths=jnp.sum(summary_positions[None, :] < kv_lengths[:, None], axis=1),
        block=DEFAULT_BLOCK_KV,
        scale=common["scale"],
        is_causal=False,
    )
    return [inside, across]


def strided_pattern(
    q_len: int,
    kv_len: int,
    *,
    stride=None,
    pattern="strided",
    summary_size=1,
    block_size=None,
):
    """The (query, key) pairs of the 'strided' or 'fixed' pattern; block_size changes nothing."""
    del block_size
    if stride is None:
        raise ValueError("pattern_mask('strided'): stride is required.")
    stride, summary_size = _check_params(pattern, stride, summary_size)
    i = np.arange(q_len)[:, None]
    j = np.arange(kv_len)[None, :]
    if pattern == "strided":
        return (np.abs(i - j) < stride) | ((i - j) % stride == 0)
    return (i // stride == j // stride) | (j % stride >= stride - summary_size)
