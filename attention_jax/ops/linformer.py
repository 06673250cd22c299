"""Linformer (Wang et al. 2020): softmax attention over keys and values projected along the
sequence, softmax(Q (E K)^T) (F V) with E, F of shape [k, n]: O(n * k) time and memory.

The projections are explicit arguments (learned in a model, so a layer owns them). Projecting
along the sequence mixes future keys into every projected key, so there is no causal form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attention_jax.ops import contract
from attention_jax.ops.dense import dense
from attention_jax.ops.fixed_draws import drawn_once

DEFAULT_PROJECTED_LEN = 256


def linformer_projection(key: jax.Array, projected_len: int, seq_len: int) -> jax.Array:
    """A random [projected_len, seq_len] projection, entries N(0, 1 / projected_len)."""
    return jax.random.normal(key, (projected_len, seq_len)) / jnp.sqrt(projected_len)


def _check_projection(name, projection, kv_len):
    if jnp.ndim(projection) != 2 or jnp.shape(projection)[1] != kv_len:
        raise ValueError(
            f"linformer: {name} must be [projected_len, kv_len = {kv_len}]; got shape "
            f"{jnp.shape(projection)}. Draw one with ops.linformer_projection(key, k, kv_len)."
        )


def linformer(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    key_projection: jax.Array | None = None,
    value_projection: jax.Array | None = None,
    projected_len: int = DEFAULT_PROJECTED_LEN,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
) -> jax.Array:
    """Linformer attention; bidirectional only.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv].
      bias, mask, local_window_size, segment ids: refused: they address keys the projection
        has mixed together.
      key_projection: E [k, S]; default `linformer_projection(key(0), projected_len, S)`, drawn
        once and reused.
      value_projection: F [k, S]; default E (the paper's shared-projection variant).
      projected_len: k of the default projection.
      scale: logit scale, default 1/sqrt(H).
      is_causal: must be False (ValueError otherwise).
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; padded keys and values are zeroed before the
        projection, so they contribute nothing to it.

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    for name, value_ in (
        ("bias", bias),
        ("mask", mask),
        ("local_window_size", local_window_size),
        ("query_segment_ids", query_segment_ids),
        ("key_value_segment_ids", key_value_segment_ids),
    ):
        if value_ is not None:
            raise ValueError(
                f"linformer: {name} is not supported: projected keys mix every position."
            )
    if is_causal:
        raise ValueError(
            "linformer: is_causal=True is not supported: projecting along the sequence mixes "
            "future keys into every projected key. Use a causal kind such as 'linear'."
        )
    dims = contract.check_qkv("linformer", query, key, value)
    if key_projection is None:
        key_projection = drawn_once(linformer_projection, projected_len, dims.kv_len)
    value_projection = key_projection if value_projection is None else value_projection
    _check_projection("key_projection", key_projection, dims.kv_len)
    _check_projection("value_projection", value_projection, dims.kv_len)
    rows = jnp.shape(key_projection)[0], jnp.shape(value_projection)[0]
    if rows[0] != rows[1] or rows[0] < 1:
        raise ValueError(
            f"linformer: key_projection and value_projection must project to the same "
            f"projected_len >= 1; got {rows[0]} and {rows[1]} rows."
        )
    kv_lengths = contract.check_lengths(
        "linformer", "key_value_seq_lengths", key_value_seq_lengths, dims.batch
    )
    # The projection mixes every position, so padding must be zeros, not just hidden.
    _, key, value = contract.zero_padding(None, key, value, None, kv_lengths)
    projected_k = jnp.einsum("ps,bskh->bpkh", key_projection.astype(key.dtype), key)
    projected_v = jnp.einsum("ps,bskh->bpkh", value_projection.astype(value.dtype), value)
    return dense(query, projected_k, projected_v, scale=scale, query_seq_lengths=query_seq_lengths)
