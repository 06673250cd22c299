"""Memory-efficient exact attention: blockwise online softmax with a recomputing backward pass.

FlashAttention (Dao et al. 2022; Dao 2023) in pure JAX. The score matrix is never stored: the
forward pass walks (query block, key block) pairs keeping a running max, normaliser and output
per query row, and saves only the output and the row log-sum-exp. The backward pass recomputes
each block's probabilities from that log-sum-exp. Memory is O(T + S) for a fixed block size.

The pairs walked are a static list: blocks that causal or sliding-window structure hides
entirely are never computed, so their work is really saved (one `lax.scan` step per active
block, which also makes the cost visible to a FLOP count of the program).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attention_jax.ops import contract, masks

DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_KV = 512


def block_pairs(spec: masks.MaskSpec, num_q_blocks, num_kv_blocks, block_q, block_kv, kv_major):
    """Static (i, j, first, last) arrays listing active blocks, grouped by q (or kv) block."""
    active = masks.active_blocks(spec, num_q_blocks, num_kv_blocks, block_q, block_kv)
    i, j = np.nonzero(active.T if kv_major else active)
    if kv_major:
        i, j = j, i
    group = j if kv_major else i
    first = np.ones_like(group, bool)
    first[1:] = group[1:] != group[:-1]
    return i.astype(np.int32), j.astype(np.int32), first


def _block(x, index, size, axis):
    return lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


def _put(x, update, index, size, axis):
    return lax.dynamic_update_slice_in_dim(x, update, index * size, axis=axis)


def _varying_like(carry, *inputs):
    """Gives fresh loop-carry values the per-device variance of the inputs (for shard_map).

    Under `shard_map` a scan carry must vary over the same mesh axes on entry and exit; constants
    start invariant while the loop mixes in sharded inputs. Adding a zero derived from every
    input (`zeros_like` keeps variance) fixes that and is a no-op everywhere else.
    """
    zero = sum(jnp.zeros_like(x, jnp.float32, shape=()) for x in jax.tree.leaves(inputs))
    return jax.tree.map(lambda c: c + zero, carry)


def _logits(q_BKGTH, k_BKSH, bias, spec, i, j, block_q, block_kv):
    """Scaled logits of block (i, j) in float32 and its visibility (or None)."""
    logits = jnp.einsum("bkgth,bksh->bkgts", q_BKGTH, k_BKSH, preferred_element_type=jnp.float32)
    if bias is not None:
        bias_block = _block(_block(bias, i, block_q, 3), j, block_kv, 4)
        logits = logits + bias_block.astype(jnp.float32)
    return logits, masks.allowed(spec, i * block_q, block_q, j * block_kv, block_kv)


def _forward(q, k, v, bias, spec, block_q, block_kv):
    """Returns output [B, K, G, Tp, Hv] (float32) and row log-sum-exp [B, K, G, Tp]."""
    B, K, G, Tp, _ = q.shape
    Sp, Hv = k.shape[2], v.shape[-1]
    i, j, first = block_pairs(spec, Tp // block_q, Sp // block_kv, block_q, block_kv, False)
    row_shape = (B, K, G, block_q)

    def step(carry, pair):
        row_max, row_sum, acc, out, lse = carry
        i, j, first = pair
        row_max = jnp.where(first, -jnp.inf, row_max)
        row_sum = jnp.where(first, 0.0, row_sum)
        acc = jnp.where(first, 0.0, acc)
        logits, ok = _logits(
            _block(q, i, block_q, 3), _block(k, j, block_kv, 2), bias, spec, i, j, block_q, block_kv
        )
        if ok is not None:
            logits = jnp.where(ok, logits, -jnp.inf)
        new_max = jnp.maximum(row_max, logits.max(axis=-1))
        # Rows with nothing visible yet keep max = -inf; shift them by 0 so exp() gives 0, not NaN.
        shift = jnp.where(jnp.isneginf(new_max), 0.0, new_max)
        p = jnp.exp(logits - shift[..., None])
        rescale = jnp.exp(row_max - shift)
        row_sum = row_sum * rescale + p.sum(axis=-1)
        acc = acc * rescale[..., None] + jnp.einsum(
            "bkgts,bksh->bkgth",
            p.astype(v.dtype),
            _block(v, j, block_kv, 2),
            preferred_element_type=jnp.float32,
        )
        # Writing every step is cheap (O(block_q * H)); the group's last write is the final one.
        seen = row_sum > 0
        out = _put(out, acc / jnp.where(seen, row_sum, 1.0)[..., None], i, block_q, 3)
        lse = _put(lse, jnp.where(seen, shift + jnp.log(row_sum), jnp.inf), i, block_q, 3)
        return (new_max, row_sum, acc, out, lse), None

    init = (
        jnp.full(row_shape, -jnp.inf, jnp.float32),
        jnp.zeros(row_shape, jnp.float32),
        jnp.zeros((*row_shape, Hv), jnp.float32),
        jnp.zeros((B, K, G, Tp, Hv), jnp.float32),
        # +inf log-sum-exp makes the backward pass see zero probability in empty rows.
        jnp.full((B, K, G, Tp), jnp.inf, jnp.float32),
    )
    init = _varying_like(init, q, k, v, bias, spec)
    (_, _, _, out, lse), _ = lax.scan(step, init, (i, j, first))
    return out, lse


def _backward(q, k, v, bias, spec, block_q, block_kv, out, lse, d_out):
    """Gradients for q, k, v, bias from the saved output and log-sum-exp, block by block."""
    B, K, G, Tp, H = q.shape
    Sp, Hv = k.shape[2], v.shape[-1]
    d_out = d_out.astype(jnp.float32)
    delta = jnp.sum(d_out * out, axis=-1)  # [B, K, G, Tp]: rowsum(dO * O) = rowsum(P * dP)
    i, j, first = block_pairs(spec, Tp // block_q, Sp // block_kv, block_q, block_kv, True)

    def step(carry, pair):
        dk_j, dv_j, dq, dk, dv, dbias = carry
        i, j, first = pair
        dk_j = jnp.where(first, 0.0, dk_j)
        dv_j = jnp.where(first, 0.0, dv_j)
        q_i = _block(q, i, block_q, 3)
        k_j = _block(k, j, block_kv, 2)
        do_i = _block(d_out, i, block_q, 3)
        logits, ok = _logits(q_i, k_j, bias, spec, i, j, block_q, block_kv)
        p = jnp.exp(logits - _block(lse, i, block_q, 3)[..., None])
        if ok is not None:
            p = jnp.where(ok, p, 0.0)
        dv_j = dv_j + jnp.einsum("bkgts,bkgth->bksh", p, do_i)
        dp = jnp.einsum(
            "bkgth,bksh->bkgts", do_i, _block(v, j, block_kv, 2), preferred_element_type=jnp.float32
        )
        ds = p * (dp - _block(delta, i, block_q, 3)[..., None])
        dk_j = dk_j + jnp.einsum("bkgts,bkgth->bksh", ds, q_i, preferred_element_type=jnp.float32)
        dq_i = jnp.einsum("bkgts,bksh->bkgth", ds, k_j, preferred_element_type=jnp.float32)
        dq = _put(dq, _block(dq, i, block_q, 3) + dq_i, i, block_q, 3)
        dk = _put(dk, dk_j, j, block_kv, 2)
        dv = _put(dv, dv_j, j, block_kv, 2)
        if dbias is not None:
            broadcast_axes = tuple(a for a in range(3) if bias.shape[a] == 1)
            ds_bias = ds.sum(axis=broadcast_axes, keepdims=True)
            dbias = lax.dynamic_update_slice(dbias, ds_bias, (0, 0, 0, i * block_q, j * block_kv))
        return (dk_j, dv_j, dq, dk, dv, dbias), None

    init = (
        jnp.zeros((B, K, block_kv, H), jnp.float32),
        jnp.zeros((B, K, block_kv, Hv), jnp.float32),
        jnp.zeros(q.shape, jnp.float32),
        jnp.zeros(k.shape, jnp.float32),
        jnp.zeros(v.shape, jnp.float32),
        None if bias is None else jnp.zeros(bias.shape, jnp.float32),
    )
    init = _varying_like(init, q, k, v, bias, spec, d_out)
    (_, _, dq, dk, dv, dbias), _ = lax.scan(step, init, (i, j, first))
    return (
        dq.astype(q.dtype),
        dk.astype(k.dtype),
        dv.astype(v.dtype),
        None if bias is None else dbias.astype(bias.dtype),
    )


# Logits are q.k with q already scaled: the scale stays outside, so it may be traced.
@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _flash_core(q, k, v, bias, spec, block_q, block_kv):
    return _forward(q, k, v, bias, spec, block_q, block_kv)[0]


def _flash_core_fwd(q, k, v, bias, spec, block_q, block_kv):
    out, lse = _forward(q, k, v, bias, spec, block_q, block_kv)
    return out, (q, k, v, bias, spec, out, lse)


def _flash_core_bwd(block_q, block_kv, residuals, d_out):
    q, k, v, bias, spec, out, lse = residuals
    grads = _backward(q, k, v, bias, spec, block_q, block_kv, out, lse, d_out)
    return (*grads, None)


_flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)


def _pad_axis(x, axis, size, value):
    if x is None or x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _check_block(name, value):
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"flash: {name} must be a positive int; got {value!r}.")
    return int(value)


def flash(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    block_q: int = DEFAULT_BLOCK_Q,
    block_kv: int = DEFAULT_BLOCK_KV,
) -> jax.Array:
    """Exact softmax attention in O(T + S) memory, forward and backward.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, H].
      bias: optional float, broadcastable to [B, N, T, S] (it is O(T * S) by nature).
      mask: optional bool, broadcastable to [B, N, T, S]; True = may attend.
      scale: logit scale; default 1/sqrt(H).
      is_causal: key j is visible to query i only if j <= i; hidden blocks are skipped.
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; keys past the length are hidden.
      local_window_size: int w or (left, right); blocks outside the band are skipped.
      query_segment_ids: optional int [B, T]; pairs attend only within the same segment.
      key_value_segment_ids: optional int [B, S].
      block_q: queries per block (clipped to T); T need not be a multiple.
      block_kv: keys per block (clipped to S); S need not be a multiple.

    Returns:
      [B, T, N, H] in the query dtype.
    """
    dims = contract.check_qkv("flash", query, key, value)
    block_q = min(_check_block("block_q", block_q), dims.q_len)
    block_kv = min(_check_block("block_kv", block_kv), dims.kv_len)
    spec = masks.build_spec(
        "flash",
        dims,
        mask=mask,
        is_causal=is_causal,
        local_window_size=local_window_size,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
    )
    if bias is not None:
        bias = contract.split_heads_4d("flash", "bias", bias, dims, "float")
    Tp = math.ceil(dims.q_len / block_q) * block_q
    Sp = math.ceil(dims.kv_len / block_kv) * block_kv
    spec = masks.MaskSpec(
        is_causal=spec.is_causal,
        window=spec.window,
        kv_valid=dims.kv_len if Sp != dims.kv_len else None,
        q_lengths=spec.q_lengths,
        kv_lengths=spec.kv_lengths,
        # Distinct pad ids so padded queries and keys never share a segment.
        q_segments=_pad_axis(spec.q_segments, 1, Tp, -1),
        kv_segments=_pad_axis(spec.kv_segments, 1, Sp, -2),
        dense=_pad_axis(_pad_axis(spec.dense, 3, Tp, False), 4, Sp, False),
    )
    bias = _pad_axis(_pad_axis(bias, 3, Tp, 0), 4, Sp, 0)
    q = _pad_axis(contract.heads_major_query(query, dims.num_kv_heads), 3, Tp, 0)
    k = _pad_axis(contract.heads_major_kv(key), 2, Sp, 0)
    v = _pad_axis(contract.heads_major_kv(value), 2, Sp, 0)
    q = q * jnp.asarray(contract.default_scale(scale, dims.head_dim), q.dtype)
    out = _flash_core(q, k, v, bias, spec, block_q, block_kv)
    return contract.seq_major_output(out[:, :, :, : dims.q_len]).astype(query.dtype)
