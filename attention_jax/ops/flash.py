"""Memory-efficient exact attention: blockwise online softmax with a recomputing backward pass.

FlashAttention (Dao et al. 2022; Dao 2023) in pure JAX. The score matrix is never stored: the
forward pass walks (query block, key block) pairs keeping a running max, normaliser and output
per query row, and saves only the output and the row log-sum-exp. The backward pass recomputes
each block's probabilities from that log-sum-exp. Memory is O(T + S) for a fixed block size
(a dense `mask` or `bias` of shape [.., T, S] is O(T * S) by itself; [.., 1, S] ones stay small).

The pairs walked are a static list: blocks that causal or sliding-window structure hides
entirely are never computed, so their work is really saved (one `lax.scan` step per active
block, which also makes the cost visible to a FLOP count of the program).

The op has a custom VJP, so reverse mode (grad, vjp) works to any order but forward mode
(jvp, jacfwd) does not; use `dense` where forward-mode derivatives are needed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attention_jax.ops import contract, masks
from attention_jax.ops.carry import varying_like
from attention_jax.ops.vendor import dispatch

DEFAULT_BLOCK_Q = 512
DEFAULT_BLOCK_KV = 512


def block_pairs(active: np.ndarray, kv_major: bool):
    """Static arrays (q_block, kv_block, starts_group) of the active blocks in walking order.

    Pairs are grouped by query block (forward) or by key block (backward, `kv_major`);
    `starts_group` marks the first pair of each group, where accumulators reset.
    """
    q_block, kv_block = np.nonzero(active.T if kv_major else active)
    if kv_major:
        q_block, kv_block = kv_block, q_block
    group = kv_block if kv_major else q_block
    starts_group = np.ones_like(group, bool)
    starts_group[1:] = group[1:] != group[:-1]
    return q_block.astype(np.int32), kv_block.astype(np.int32), starts_group


def padded_block_pairs(active_per_head: np.ndarray, kv_major: bool):
    """Per-head pairs [heads..., L] padded to one length L, plus the bool mask of real pairs.

    A head with fewer active blocks repeats its last pair, disabled, so it changes nothing; a
    head with none gets a single disabled pair at block (0, 0).
    """
    heads = active_per_head.shape[:-2]
    per_head = [
        block_pairs(a, kv_major) for a in active_per_head.reshape(-1, *active_per_head.shape[-2:])
    ]
    length = max(1, max(len(p[0]) for p in per_head))
    out = np.zeros((4, len(per_head), length), np.int32)
    for h, (i, j, starts) in enumerate(per_head):
        n = len(i)
        if n == 0:
            out[2, h, 0] = 1
            continue
        out[0, h], out[1, h] = (
            np.pad(i, (0, length - n), "edge"),
            np.pad(j, (0, length - n), "edge"),
        )
        out[2, h, :n], out[3, h, :n] = starts, 1
    i, j, starts, enabled = (x.reshape(*heads, length) for x in out)
    return i, j, starts.astype(bool), enabled.astype(bool)


def _block(x, index, size, axis):
    return lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


def _put(x, update, index, size, axis):
    return lax.dynamic_update_slice_in_dim(x, update, index * size, axis=axis)


def _masked_logits(q_BKGTH, k_BKSH, bias, spec, i, j, enabled, block_q, block_kv):
    """Logits of block (i, j), hidden pairs (or all, when not `enabled`) at -inf, in float32+.

    Also returns d(capped)/d(raw) logits under a soft cap (None without one), for the backward.
    """
    acc = contract.accumulation_dtype(q_BKGTH.dtype)
    logits = jnp.einsum("bkgth,bksh->bkgts", q_BKGTH, k_BKSH, preferred_element_type=acc)
    cap_slope = None
    if spec.logits_soft_cap is not None:
        squashed = jnp.tanh(logits / spec.logits_soft_cap)
        logits, cap_slope = spec.logits_soft_cap * squashed, 1.0 - squashed * squashed
    if bias is not None:
        bias_block = masks.block_of(bias, i * block_q, block_q, j * block_kv, block_kv)
        logits = logits + bias_block.astype(acc)
    ok = masks.allowed(spec, i * block_q, block_q, j * block_kv, block_kv)
    if enabled is not None:
        ok = enabled if ok is None else ok & enabled
    if ok is not None:
        logits = jnp.where(ok, logits, -jnp.inf)
    return logits, cap_slope


def _forward(q_BKGTH, k_BKSH, v_BKSH, bias, spec, pairs, block_q, block_kv):
    """Returns output [B, K, G, Tp, Hv] and row log-sum-exp [B, K, G, Tp], in float32 (or f64).

    `pairs` = (q_block, kv_block, starts_group, enabled or None), grouped by query block.
    """
    B, K, G, Tp, _ = q_BKGTH.shape
    acc = contract.accumulation_dtype(q_BKGTH.dtype)
    Hv = v_BKSH.shape[-1]

    def step(carry, pair):
        row_max, row_sum, acc_BKGtH, out_BKGTH, lse_BKGT = carry
        i, j, starts_group, enabled = pair
        row_max = jnp.where(starts_group, -jnp.inf, row_max)
        row_sum = jnp.where(starts_group, 0.0, row_sum)
        acc_BKGtH = jnp.where(starts_group, 0.0, acc_BKGtH)
        logits_BKGts, _ = _masked_logits(
            _block(q_BKGTH, i, block_q, 3),
            _block(k_BKSH, j, block_kv, 2),
            bias,
            spec,
            i,
            j,
            enabled,
            block_q,
            block_kv,
        )
        new_max = jnp.maximum(row_max, logits_BKGts.max(axis=-1))
        # Rows with nothing visible yet keep max = -inf; shift them by 0 so exp() gives 0, not NaN.
        shift = jnp.where(jnp.isneginf(new_max), 0.0, new_max)
        p_BKGts = jnp.exp(logits_BKGts - shift[..., None])
        rescale = jnp.exp(row_max - shift)
        row_sum = row_sum * rescale + p_BKGts.sum(axis=-1)
        acc_BKGtH = acc_BKGtH * rescale[..., None] + jnp.einsum(
            "bkgts,bksh->bkgth",
            p_BKGts.astype(v_BKSH.dtype),
            _block(v_BKSH, j, block_kv, 2),
            preferred_element_type=acc,
        )
        # Writing every step is cheap (O(block_q * H)); the group's last write is the final one.
        seen = row_sum > 0
        out_BKGTH = _put(
            out_BKGTH, acc_BKGtH / jnp.where(seen, row_sum, 1.0)[..., None], i, block_q, 3
        )
        lse_BKGT = _put(lse_BKGT, jnp.where(seen, shift + jnp.log(row_sum), jnp.inf), i, block_q, 3)
        return (new_max, row_sum, acc_BKGtH, out_BKGTH, lse_BKGT), None

    row_shape = (B, K, G, block_q)
    init = (
        jnp.full(row_shape, -jnp.inf, acc),
        jnp.zeros(row_shape, acc),
        jnp.zeros((*row_shape, Hv), acc),
        jnp.zeros((B, K, G, Tp, Hv), acc),
        # +inf log-sum-exp makes the backward pass see zero probability in empty rows.
        jnp.full((B, K, G, Tp), jnp.inf, acc),
    )
    init = varying_like(init, q_BKGTH, k_BKSH, v_BKSH, bias, spec)
    (*_, out_BKGTH, lse_BKGT), _ = lax.scan(step, init, pairs)
    return out_BKGTH, lse_BKGT


def _backward(
    q_BKGTH, k_BKSH, v_BKSH, bias, spec, pairs, block_q, block_kv, out, lse, d_out, d_lse
):
    """Gradients for q, k, v, bias from the saved output and log-sum-exp, block by block.

    `pairs` are grouped by key block. `d_lse` is the cotangent of the returned log-sum-exp.
    """
    B, K, G, Tp, H = q_BKGTH.shape
    Hv = v_BKSH.shape[-1]
    dtype = q_BKGTH.dtype
    acc = contract.accumulation_dtype(dtype)
    # rowsum(dO * O) = rowsum(P * dP): the softmax-backward correction, one number per row; the
    # log-sum-exp's own gradient is P, so its cotangent enters with the opposite sign.
    delta_BKGT = jnp.sum(d_out.astype(acc) * out, axis=-1) - d_lse.astype(acc)
    d_out = d_out.astype(dtype)

    def matmul(spec_str, a, b):
        # Operands in the input dtype (bf16 matmuls on accelerators), accumulation in float32+.
        return jnp.einsum(spec_str, a.astype(dtype), b, preferred_element_type=acc)

    def step(carry, pair):
        dk_BKsH, dv_BKsH, dq_BKGTH, dk_BKSH, dv_BKSH, dbias = carry
        i, j, starts_group, enabled = pair
        dk_BKsH = jnp.where(starts_group, 0.0, dk_BKsH)
        dv_BKsH = jnp.where(starts_group, 0.0, dv_BKsH)
        q_BKGtH = _block(q_BKGTH, i, block_q, 3)
        k_BKsH = _block(k_BKSH, j, block_kv, 2)
        do_BKGtH = _block(d_out, i, block_q, 3)
        logits_BKGts, cap_slope = _masked_logits(
            q_BKGtH, k_BKsH, bias, spec, i, j, enabled, block_q, block_kv
        )
        # Hidden pairs are -inf here, so exp() is 0 there (and stays finite under grad-of-grad).
        p_BKGts = jnp.exp(logits_BKGts - _block(lse, i, block_q, 3)[..., None])
        dv_BKsH = dv_BKsH + matmul("bkgts,bkgth->bksh", p_BKGts, do_BKGtH)
        dp_BKGts = matmul("bkgth,bksh->bkgts", do_BKGtH, _block(v_BKSH, j, block_kv, 2))
        ds_BKGts = p_BKGts * (dp_BKGts - _block(delta_BKGT, i, block_q, 3)[..., None])
        # The bias is added after the cap; q.k passes through it.
        dqk_BKGts = ds_BKGts if cap_slope is None else ds_BKGts * cap_slope
        dk_BKsH = dk_BKsH + matmul("bkgts,bkgth->bksh", dqk_BKGts, q_BKGtH)
        dq_BKGtH = matmul("bkgts,bksh->bkgth", dqk_BKGts, k_BKsH)
        dq_BKGTH = _put(dq_BKGTH, _block(dq_BKGTH, i, block_q, 3) + dq_BKGtH, i, block_q, 3)
        dk_BKSH = _put(dk_BKSH, dk_BKsH, j, block_kv, 2)
        dv_BKSH = _put(dv_BKSH, dv_BKsH, j, block_kv, 2)
        if dbias is not None:
            dbias = masks.add_to_block(dbias, ds_BKGts, i * block_q, j * block_kv)
        return (dk_BKsH, dv_BKsH, dq_BKGTH, dk_BKSH, dv_BKSH, dbias), None

    init = (
        jnp.zeros((B, K, block_kv, H), acc),
        jnp.zeros((B, K, block_kv, Hv), acc),
        jnp.zeros(q_BKGTH.shape, acc),
        jnp.zeros(k_BKSH.shape, acc),
        jnp.zeros(v_BKSH.shape, acc),
        None if bias is None else jnp.zeros(bias.shape, acc),
    )
    init = varying_like(init, q_BKGTH, k_BKSH, v_BKSH, bias, spec, d_out)
    (_, _, dq, dk, dv, dbias), _ = lax.scan(step, init, pairs)
    return (
        dq.astype(dtype),
        dk.astype(k_BKSH.dtype),
        dv.astype(v_BKSH.dtype),
        None if bias is None else dbias.astype(bias.dtype),
    )


# Logits are q.k with q already scaled: the scale stays outside, so it may be traced.
@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _flash_core(q, k, v, bias, spec, fwd_pairs, bwd_pairs, block_q, block_kv):
    out, lse = _forward(q, k, v, bias, spec, fwd_pairs, block_q, block_kv)
    return out, _empty_rows_at_minus_inf(lse)


def _empty_rows_at_minus_inf(lse):
    # Inside, an empty row keeps lse = +inf so the backward pass sees exp(x - lse) = 0; the
    # log-sum-exp of nothing, as returned, is -inf.
    return jnp.where(lse == jnp.inf, -jnp.inf, lse)


def _flash_core_fwd(q, k, v, bias, spec, fwd_pairs, bwd_pairs, block_q, block_kv):
    out, lse = _forward(q, k, v, bias, spec, fwd_pairs, block_q, block_kv)
    return (out, _empty_rows_at_minus_inf(lse)), (q, k, v, bias, spec, bwd_pairs, out, lse)


def _flash_core_bwd(block_q, block_kv, residuals, cotangents):
    q, k, v, bias, spec, bwd_pairs, out, lse = residuals
    d_out, d_lse = cotangents
    grads = _backward(q, k, v, bias, spec, bwd_pairs, block_q, block_kv, out, lse, d_out, d_lse)
    return (*grads, None, None, None)


_flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)


def _map_heads_axis(fn, axis, map_kv, q, k, v, bias, spec, fwd_pairs, bwd_pairs):
    """vmaps `fn` over one head axis (1 = K, 2 = G) with pairs [heads, L]; fn sees it as size 1."""

    def mapped_axis(x):
        return None if x is None or x.shape[axis] == 1 else axis

    bias_axis, dense_axis, kv_axis = (
        mapped_axis(bias),
        mapped_axis(spec.dense),
        1 if map_kv else None,
    )

    def one_head(q, k, v, bias, dense, fwd_pairs, bwd_pairs):
        def expand(x, x_axis):
            return x if x_axis is None else jnp.expand_dims(x, x_axis)

        out, lse = fn(
            expand(q, axis),
            expand(k, kv_axis),
            expand(v, kv_axis),
            expand(bias, bias_axis),
            dataclasses.replace(spec, dense=expand(dense, dense_axis)),
            fwd_pairs,
            bwd_pairs,
        )
        return out.squeeze(axis), lse.squeeze(axis)

    return jax.vmap(
        one_head,
        in_axes=(axis, kv_axis, kv_axis, bias_axis, dense_axis, 0, 0),
        out_axes=axis,
    )(q, k, v, bias, spec.dense, fwd_pairs, bwd_pairs)


def _core_per_head(q, k, v, bias, spec, active_KGqk, block_q, block_kv):
    """The core with a different block list per head: pairs padded to one length, vmapped."""
    fwd_pairs = tuple(map(jnp.asarray, padded_block_pairs(active_KGqk, kv_major=False)))
    bwd_pairs = tuple(map(jnp.asarray, padded_block_pairs(active_KGqk, kv_major=True)))

    def core(*args):
        return _flash_core(*args, block_q, block_kv)

    def over_groups(q, k, v, bias, spec, fwd_pairs, bwd_pairs):
        return _map_heads_axis(core, 2, False, q, k, v, bias, spec, fwd_pairs, bwd_pairs)

    return _map_heads_axis(over_groups, 1, True, q, k, v, bias, spec, fwd_pairs, bwd_pairs)


def _pad_axis(x, axis, size, value):
    """Pads a full-length axis up to `size`; absent arrays and broadcast (size-1) axes stay."""
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


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
    logits_soft_cap: float | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """Exact softmax attention in O(T + S) memory, forward and backward.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv]; Hv may differ from H.
      bias: optional float, broadcastable to [B, N, T, S].
      mask: optional bool, broadcastable to [B, N, T, S]; True = may attend.
      scale: logit scale (a scalar, may be traced); default 1/sqrt(H).
      is_causal: key j is visible to query i only if j <= i (top-left aligned, as in
        jax.nn.dot_product_attention); hidden blocks are skipped.
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; keys past the length are hidden.
      local_window_size: int w or (left, right); blocks outside the band are skipped.
      query_segment_ids: optional int [B, T]; pairs attend only within the same segment.
      key_value_segment_ids: optional int [B, S].
      block_q: queries per block (clipped to T); T need not be a multiple.
      block_kv: keys per block (clipped to S); S need not be a multiple.
      logits_soft_cap: c squashes the scaled logits to c * tanh(logits / c) before the bias.
      implementation: 'xla' (this engine), 'cudnn', 'pallas_tpu', 'pallas_gpu', 'tokamax', or
        None for the fastest that can run the call here (`ops.explain` says which).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    arguments = contract.forwarded(locals())
    out = dispatch.attend("flash", implementation, query, key, value, bias, mask, arguments)
    if out is not None:
        return out
    return blocked_attention(
        "flash",
        query,
        key,
        value,
        block_q=block_q,
        block_kv=block_kv,
        **arguments,
    )


def blocked_attention(
    kind: str,
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    scale=None,
    is_causal=False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    block_q: int,
    block_kv: int,
    layout: np.ndarray | None = None,
    global_positions: tuple[int, ...] | None = None,
    return_lse: bool = False,
    logits_soft_cap: float | None = None,
):
    """The engine behind flash and the block-sparse kinds: exact attention over active blocks.

    `layout` (static bool [ceil(T / block_q), ceil(S / block_kv)], or [N, ...] for one layout per
    query head) hides whole blocks on top of the causal/window structure; only the blocks left
    are computed. `global_positions` (static) exempts those tokens from the window in both
    directions. With `return_lse`, returns the output in float32 (not yet rounded to the query
    dtype) and the row log-sum-exp [B, T, N] (-inf for rows that see nothing), differentiable,
    so partial attentions over disjoint key sets can be merged exactly (`combine.merge`).
    """
    dims = contract.check_qkv(kind, query, key, value)
    block_q = contract.static_int(kind, "block_q", block_q)
    block_kv = contract.static_int(kind, "block_kv", block_kv)
    num_q_blocks, num_kv_blocks = -(-dims.q_len // block_q), -(-dims.kv_len // block_kv)
    if layout is not None and (
        np.shape(layout)[-2:] != (num_q_blocks, num_kv_blocks)
        or np.ndim(layout) not in (2, 3)
        or (np.ndim(layout) == 3 and np.shape(layout)[0] != dims.num_heads)
    ):
        raise ValueError(
            f"{kind}: layout must have shape [ceil(q_len / block_q), ceil(kv_len / block_kv)] = "
            f"[{num_q_blocks}, {num_kv_blocks}], or [num_heads = {dims.num_heads}, "
            f"{num_q_blocks}, {num_kv_blocks}] for one layout per head; got {np.shape(layout)}."
        )
    # A sequence shorter than a block is one block of its own length.
    block_q, block_kv = min(block_q, dims.q_len), min(block_kv, dims.kv_len)
    spec = masks.build_spec(
        kind,
        dims,
        mask=mask,
        is_causal=is_causal,
        local_window_size=local_window_size,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
    )
    scale = contract.check_scale(kind, scale, dims.head_dim)
    if bias is not None:
        bias = contract.split_heads_4d(kind, "bias", bias, dims, "float")
    Tp, Sp = num_q_blocks * block_q, num_kv_blocks * block_kv
    spec = dataclasses.replace(
        spec,
        kv_valid=dims.kv_len if Sp != dims.kv_len else None,
        global_positions=global_positions,
        logits_soft_cap=contract.check_soft_cap(kind, logits_soft_cap),
        # Distinct pad ids so padded queries and keys never share a segment.
        q_segments=_pad_axis(spec.q_segments, 1, Tp, -1),
        kv_segments=_pad_axis(spec.kv_segments, 1, Sp, -2),
        dense=_pad_axis(_pad_axis(spec.dense, 3, Tp, False), 4, Sp, False),
    )
    bias = _pad_axis(_pad_axis(bias, 3, Tp, 0), 4, Sp, 0)
    query, key, value = contract.zero_padding(query, key, value, spec.q_lengths, spec.kv_lengths)
    q = _pad_axis(contract.heads_major_query(query, dims.num_kv_heads), 3, Tp, 0)
    k = _pad_axis(contract.heads_major_kv(key), 2, Sp, 0)
    v = _pad_axis(contract.heads_major_kv(value), 2, Sp, 0)
    q = q * jnp.asarray(scale, q.dtype)
    active = masks.active_blocks(spec, num_q_blocks, num_kv_blocks, block_q, block_kv)
    if layout is not None:
        active = active & np.asarray(layout)
    if active.ndim == 3 and (active == active[:1]).all():
        active = active[0]
    if active.ndim == 2:
        out, lse = _flash_core(
            q,
            k,
            v,
            bias,
            spec,
            (*block_pairs(active, kv_major=False), None),
            (*block_pairs(active, kv_major=True), None),
            block_q,
            block_kv,
        )
    else:
        active = active.reshape(dims.num_kv_heads, dims.group, num_q_blocks, num_kv_blocks)
        out, lse = _core_per_head(q, k, v, bias, spec, active, block_q, block_kv)
    out = contract.seq_major_output(out[:, :, :, : dims.q_len])
    if not return_lse:
        return out.astype(query.dtype)
    B, K, G = lse.shape[:3]
    return out, lse[..., : dims.q_len].transpose(0, 3, 1, 2).reshape(B, dims.q_len, K * G)
