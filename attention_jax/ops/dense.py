"""Dense softmax attention (Vaswani et al. 2017): the readable reference every other kind matches.

It materialises the [B, N, T, S] score matrix, so its memory is O(T * S); `flash` computes the
same function in O(T + S) memory.

It is the baseline every kind is timed against, so it must be as fast as
`jax.nn.dot_product_attention` (`bench/dense_baseline.py` measures the ratio). Without
`return_weights` one engine, `_attend`, does the work: query heads of a kv head are rows
[B, K, G * T, S] (XLA on CPU copies arrays with a size-1 axis), masks are one `where` before the
row max, the output is normalised after the product with V, and the softmax derivative is
written out as a custom JVP. Forward mode (jvp) therefore still works, and the backward pass,
its transpose, keeps only exp(logits) and builds one [.., G * T, S] gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from attention_jax.ops import contract, masks
from attention_jax.ops.vendor import dispatch


def _exp_and_inverse_sum(logits: jax.Array, ok: jax.Array | None, recentre: bool):
    """exp(logits - row max), 0 where not ok, and 1 / its row sum (1 on rows with nothing ok).

    `recentre` is for logits that end in a product (`dot * scale`, or a dot that XLA turns into
    a multiply): XLA:CPU recomputes that product inside both the max fusion and the exp fusion,
    and LLVM contracts `product - max` into one FMA in the exp fusion only. At the argmax the
    exponent is then the product's rounding error, ~|logit| * 2^-24 instead of 0; past 88 (logits
    beyond ~2e9) exp overflows and the row turns NaN. A second max over `logits - max`, which both
    fusions now compute alike, makes that exponent exactly 0, for one more pass over the logits.
    """
    if ok is not None:
        logits = jnp.where(ok, logits, -jnp.inf)
    shifted = logits - _row_max(logits)
    if recentre:
        shifted = shifted - _row_max(shifted)
    unnormalised = jnp.exp(shifted)
    row_sum = unnormalised.sum(axis=-1, keepdims=True)
    return unnormalised, 1.0 / jnp.where(row_sum > 0, row_sum, 1.0)


def _row_max(x):
    # A row with nothing allowed (or all -inf bias) shifts by 0, so exp gives zeros, not NaN.
    row_max = x.max(axis=-1, keepdims=True)
    return jnp.where(row_max == -jnp.inf, 0.0, row_max)


@jax.custom_jvp
def masked_softmax(logits: jax.Array, ok: jax.Array | None) -> jax.Array:
    """Softmax over the last axis that gives all-zero rows where nothing is allowed.

    Safe for logits of any size under jit, however they were computed (see
    `_exp_and_inverse_sum`).
    """
    unnormalised, inverse_sum = _exp_and_inverse_sum(logits, ok, recentre=True)
    return unnormalised * inverse_sum


@masked_softmax.defjvp
def _masked_softmax_jvp(primals, tangents):
    logits, ok = primals
    d_logits, _ = tangents
    probs = masked_softmax(logits, ok)
    # Masked entries and empty rows have probability 0, so their derivative is exactly 0.
    return probs, probs * (d_logits - (probs * d_logits).sum(axis=-1, keepdims=True))


def _rows(x: jax.Array, group: int, q_len: int) -> jax.Array:
    """[A, C, G|1, T|1, S|1] -> [A, C, G * T | 1, S|1]: query heads of a kv head as rows."""
    if x.shape[2] == 1 and x.shape[3] == 1:
        return x.reshape(x.shape[0], x.shape[1], 1, x.shape[4])
    x = jnp.broadcast_to(x, (*x.shape[:2], group, q_len, x.shape[4]))
    return x.reshape(x.shape[0], x.shape[1], group * q_len, x.shape[4])


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def _attend(q_BKRH, k_BKSH, v_BKSH, bias_BKRS, ok_BKRS, scale, cap):
    """masked_softmax(cap(scale * q k^T) + bias) @ v over rows R = G * T, in float32 or wider."""
    return _attend_parts(q_BKRH, k_BKSH, v_BKSH, bias_BKRS, ok_BKRS, scale, cap)[0]


def _attend_parts(q_BKRH, k_BKSH, v_BKSH, bias_BKRS, ok_BKRS, scale, cap):
    acc = scale.dtype
    # Logits that end in a product XLA may recompute per fusion (see _exp_and_inverse_sum): the
    # scale applied after a bfloat16 dot, or a dot over a head dim of 1, which XLA writes as a
    # multiply. Other logits come out of a matmul, one array every fusion reads alike.
    trailing_product = q_BKRH.dtype != acc or q_BKRH.shape[-1] == 1
    if q_BKRH.dtype == acc:
        # Scaling q, not the [.., R, S] logits, saves a pass over R x S (XLA does not fuse it).
        logits_BKRS = jnp.einsum("bkrh,bksh->bkrs", scale * q_BKRH, k_BKSH)
    else:
        # A bfloat16 q * scale would round q; scale the float32 logits instead.
        logits_BKRS = scale * jnp.einsum(
            "bkrh,bksh->bkrs", q_BKRH, k_BKSH, preferred_element_type=acc
        )
    tanh_BKRS = None
    if cap is not None:
        tanh_BKRS = jnp.tanh(logits_BKRS / cap)
        logits_BKRS = cap * tanh_BKRS
    if bias_BKRS is not None:
        logits_BKRS = (logits_BKRS + bias_BKRS).astype(acc)
    exp_BKRS, inverse_sum_BKR1 = _exp_and_inverse_sum(logits_BKRS, ok_BKRS, trailing_product)
    # Normalising the [.., R, H] product, not the [.., R, S] weights, saves a pass over R x S.
    out_BKRH = inverse_sum_BKR1 * jnp.einsum(
        "bkrs,bksh->bkrh", exp_BKRS.astype(v_BKSH.dtype), v_BKSH, preferred_element_type=acc
    )
    return out_BKRH, exp_BKRS, inverse_sum_BKR1, tanh_BKRS


def _attend_jvp(cap, primals, tangents):
    q_BKRH, k_BKSH, v_BKSH, bias_BKRS, ok_BKRS, scale = primals
    dq_BKRH, dk_BKSH, dv_BKSH, d_bias, _, d_scale = (
        None if type(t) is SymbolicZero else t for t in tangents
    )
    out_BKRH, exp_BKRS, inverse_sum_BKR1, tanh_BKRS = _attend_parts(*primals, cap)
    acc, low = scale.dtype, q_BKRH.dtype

    def qk(a_BKRH, b_BKSH):
        return jnp.einsum("bkrh,bksh->bkrs", a_BKRH, b_BKSH, preferred_element_type=acc)

    def scaled(x_BKRH):
        # On the [.., R, H] factor: scaling [.., R, S] logits costs XLA a broadcast of the scale.
        return (scale * x_BKRH).astype(low)

    # Only the inputs being differentiated contribute: a symbolic zero costs nothing.
    d_logits_BKRS = None
    if dq_BKRH is not None:
        d_logits_BKRS = qk(scaled(dq_BKRH), k_BKSH)
    if dk_BKSH is not None:
        d_logits_BKRS = _add(d_logits_BKRS, qk(scaled(q_BKRH), dk_BKSH))
    if d_scale is not None:
        d_logits_BKRS = _add(d_logits_BKRS, d_scale * qk(q_BKRH, k_BKSH))
    if d_logits_BKRS is not None and tanh_BKRS is not None:
        d_logits_BKRS = d_logits_BKRS * (1 - tanh_BKRS * tanh_BKRS)
    if d_bias is not None:
        d_logits_BKRS = _add(d_logits_BKRS, d_bias.astype(acc))
    d_out_BKRH = None
    if d_logits_BKRS is not None:
        # Masked entries and empty rows have exp 0, so their derivative is exactly 0.
        probs_BKRS = exp_BKRS * inverse_sum_BKR1
        d_probs_BKRS = probs_BKRS * (
            d_logits_BKRS - (probs_BKRS * d_logits_BKRS).sum(axis=-1, keepdims=True)
        )
        d_out_BKRH = jnp.einsum(
            "bkrs,bksh->bkrh", d_probs_BKRS.astype(low), v_BKSH, preferred_element_type=acc
        )
    if dv_BKSH is not None:
        d_out_BKRH = _add(
            d_out_BKRH,
            inverse_sum_BKR1
            * jnp.einsum(
                "bkrs,bksh->bkrh", exp_BKRS.astype(low), dv_BKSH, preferred_element_type=acc
            ),
        )
    return out_BKRH, d_out_BKRH


def _add(a, b):
    return b if a is None else a + b


_attend.defjvp(_attend_jvp, symbolic_zeros=True)


def dense(
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
    logits_soft_cap: float | None = None,
    return_weights: bool = False,
    implementation: str | None = None,
):
    """Exact softmax attention with the scores in memory.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv]; Hv may differ from H.
      bias: optional float, broadcastable to [B, N, T, S]; added to the scaled logits.
      mask: optional bool, broadcastable to [B, N, T, S]; True = may attend.
      scale: logit scale; default 1/sqrt(H).
      is_causal: key j is visible to query i only if j <= i.
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; keys past the length are hidden.
      local_window_size: int w or (left, right): query i sees keys i - left .. i + right.
      query_segment_ids: optional int [B, T]; with key_value_segment_ids [B, S], pairs attend
        only within the same segment (packed sequences).
      key_value_segment_ids: optional int [B, S].
      logits_soft_cap: c squashes the scaled logits to c * tanh(logits / c) before the bias
        (Gemma 2); default None leaves them as they are.
      return_weights: also return the attention probabilities [B, N, T, S] (float32, or float64
        for float64 inputs).
      implementation: 'xla' (this code), 'cudnn', 'pallas_tpu', 'pallas_gpu', 'tokamax', or
        None for the fastest that can run the call here (`ops.explain` says which).

    Returns:
      [B, T, N, Hv] in the query dtype, or (output, weights) when return_weights is set.
    """
    arguments = contract.forwarded(locals())
    out = dispatch.attend(
        "dense", implementation, query, key, value, bias, mask, arguments, weights=return_weights
    )
    if out is not None:
        return out
    dims = contract.check_qkv("dense", query, key, value)
    spec = masks.build_spec(
        "dense",
        dims,
        mask=mask,
        is_causal=is_causal,
        local_window_size=local_window_size,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
    )
    query, key, value = contract.zero_padding(query, key, value, spec.q_lengths, spec.kv_lengths)
    q_BKGTH = contract.heads_major_query(query, dims.num_kv_heads)
    k_BKSH = contract.heads_major_kv(key)
    v_BKSH = contract.heads_major_kv(value)

    scale = contract.check_scale("dense", scale, dims.head_dim)
    cap = contract.check_soft_cap("dense", logits_soft_cap)
    acc = contract.accumulation_dtype(query.dtype)
    if bias is not None:
        bias = contract.split_heads_4d("dense", "bias", bias, dims, "float")
    ok = masks.allowed(spec, 0, dims.q_len, 0, dims.kv_len)
    if not return_weights:
        B, K, G, T, H = q_BKGTH.shape
        out_BKRH = _attend(
            q_BKGTH.reshape(B, K, G * T, H),
            k_BKSH,
            v_BKSH,
            None if bias is None else _rows(bias, G, T),
            None if ok is None else _rows(ok, G, T),
            jnp.asarray(scale, acc),
            cap,
        )
        out_BKGTH = out_BKRH.reshape(B, K, G, T, out_BKRH.shape[-1])
        return contract.seq_major_output(out_BKGTH).astype(query.dtype)

    logits_BKGTS = jnp.einsum(
        "bkgth,bksh->bkgts", q_BKGTH, k_BKSH, preferred_element_type=acc
    ) * jnp.asarray(scale, acc)
    logits_BKGTS = contract.soft_cap(logits_BKGTS, cap)
    if bias is not None:
        logits_BKGTS = logits_BKGTS + bias
    probs_BKGTS = masked_softmax(logits_BKGTS, ok)
    out_BKGTH = jnp.einsum(
        "bkgts,bksh->bkgth",
        probs_BKGTS.astype(value.dtype),
        v_BKSH,
        preferred_element_type=acc,
    )
    out = contract.seq_major_output(out_BKGTH).astype(query.dtype)
    B, K, G, T, S = probs_BKGTS.shape
    return out, probs_BKGTS.reshape(B, K * G, T, S)
