"""The op contract as the state-carrying kinds (retnet, gla, mamba2, deltanet, gated_deltanet)
support it, checked once: causal self-attention only, with scale and sequence lengths."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from attention_jax.ops import contract


@dataclasses.dataclass(frozen=True)
class RecurrentCall:
    """A checked call: heads-major inputs in the accumulation dtype, and what the output needs.

    Attributes:
      dims: the call's sizes.
      chunk: tokens per chunk.
      scale: the output scale.
      q_BKGTH, k_BKTH, v_BKTV: the inputs, heads-major, padding (past the lengths) zeroed.
      live_BT: bool [B, T], the positions before the key lengths; None without lengths.
      q_lengths: int [B] or None.
      dtype: the query dtype, the output's.
    """

    dims: contract.Dims
    chunk: int
    scale: jax.Array | float
    q_BKGTH: jax.Array
    k_BKTH: jax.Array
    v_BKTV: jax.Array
    live_BT: jax.Array | None
    q_lengths: jax.Array | None
    dtype: jnp.dtype

    def frozen_past_length(self, gate_BT, rest: float = 0.0) -> jax.Array:
        """A per-step gate [B, T, ...] set to `rest` past the key lengths, so padding neither
        writes to the state nor decays it."""
        if self.live_BT is None:
            return gate_BT
        live = self.live_BT.reshape(*self.live_BT.shape, *(1,) * (gate_BT.ndim - 2))
        return jnp.where(live, gate_BT, rest)

    def output(self, out_BKGTV) -> jax.Array:
        """[B, K, G, T, Hv] -> [B, T, N, Hv] in the query dtype, zero past the query lengths."""
        if self.q_lengths is not None:
            live = jnp.arange(self.dims.q_len)[None, :] < self.q_lengths[:, None]
            out_BKGTV = jnp.where(live[:, None, None, :, None], out_BKGTV, 0.0)
        return contract.seq_major_output(out_BKGTV).astype(self.dtype)


def check_output_scale(kind: str, scale, head_dim: int):
    """The output scale: Hk^-1/2 unless given; a concrete one must be > 0, since with no
    normaliser 0 silently zeroes the output and a negative one flips its sign."""
    scale = contract.check_scale(kind, scale, head_dim)
    value = contract.concrete_values(scale)
    if value is not None and not value > 0:
        raise ValueError(
            f"{kind}: scale must be > 0 (the output is scale * q^T S, with no normaliser); "
            f"got {float(value)}."
        )
    return scale


def prepare(
    kind: str,
    query,
    key,
    value,
    *,
    chunk_size: int,
    scale=None,
    is_causal: bool = False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
    bias=None,
    mask=None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    logits_soft_cap=None,
) -> RecurrentCall:
    """Checks a call of a state-carrying kind and lays its inputs out heads-major."""
    contract.refuse(
        kind,
        "a state-carrying kind has no score matrix to mask, bias or cap",
        bias=bias,
        mask=mask,
        local_window_size=local_window_size,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
        logits_soft_cap=logits_soft_cap,
    )
    if is_causal is not True:
        raise ValueError(
            f"{kind}: only is_causal=True is supported: the state carries the past, never the "
            "future. Use a bidirectional kind (dense, linear) for an encoder."
        )
    dims = contract.check_qkv(kind, query, key, value)
    if dims.q_len != dims.kv_len:
        raise ValueError(
            f"{kind}: causal self-attention needs q_len == kv_len; got {dims.q_len}, {dims.kv_len}."
        )
    chunk = contract.static_int(kind, "chunk_size", chunk_size)
    scale = check_output_scale(kind, scale, dims.head_dim)
    q_lengths = contract.check_lengths(kind, "query_seq_lengths", query_seq_lengths, dims.batch)
    kv_lengths = contract.check_lengths(
        kind, "key_value_seq_lengths", key_value_seq_lengths, dims.batch
    )
    dtype = query.dtype
    query, key, value = contract.zero_padding(query, key, value, q_lengths, kv_lengths)
    acc = contract.accumulation_dtype(dtype)
    live_BT = None
    if kv_lengths is not None:
        live_BT = jnp.arange(dims.kv_len)[None, :] < kv_lengths[:, None]
    return RecurrentCall(
        dims,
        chunk,
        scale,
        contract.heads_major_query(query, dims.num_kv_heads).astype(acc),
        contract.heads_major_kv(key).astype(acc),
        contract.heads_major_kv(value).astype(acc),
        live_BT,
        q_lengths,
        dtype,
    )
