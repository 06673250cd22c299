"""The calling convention shared by every attention kind: argument checks, heads-major layout.

Every kind takes query [B, T, N, H] and key/value [B, S, K, H] with N % K == 0 (K < N is GQA,
K == 1 is MQA). Internally kinds work heads-major, query as [B, K, G, T, H] with G = N // K query
heads per kv head, so grouped heads share K/V without copying it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# The contract's arguments besides query, key and value. An op built on another (local on
# flash's engine, say) passes them on with `forwarded(locals())` instead of naming each.
CONTRACT_ARGUMENTS = (
    "bias",
    "mask",
    "scale",
    "is_causal",
    "query_seq_lengths",
    "key_value_seq_lengths",
    "local_window_size",
    "query_segment_ids",
    "key_value_segment_ids",
    "logits_soft_cap",
)


def forwarded(arguments: Mapping) -> dict:
    """The contract's arguments among `arguments`: an op's `locals()`, taken before it rebinds
    any of them, so they reach the op it is built on unchanged."""
    return {name: arguments[name] for name in CONTRACT_ARGUMENTS if name in arguments}


def static_int(owner: str, name: str, value, minimum: int = 1) -> int:
    """`value` as an int if it is a Python or NumPy integer >= minimum; a ValueError naming owner
    and name if not. Sizes are static: they decide shapes and which blocks are computed."""
    # bool is an int to Python, but True heads or blocks is a slip, never a size.
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        what = "a positive integer (>= 1)" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{owner}: {name} must be {what}; got {value!r}.")
    return int(value)


def concrete_values(x) -> np.ndarray | None:
    """x as a NumPy array when its values are known (not traced), for range checks; else None.

    Checked in NumPy: jnp operations on a concrete array inside a jitted function are staged,
    so their result could not be branched on.
    """
    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def refuse(kind: str, why: str, **arguments) -> None:
    """Raises for the first of `arguments` that is given (not None): `kind` cannot honour it,
    because `why`."""
    for name, value in arguments.items():
        if value is not None:
            raise ValueError(f"{kind}: {name} is not supported ({why}).")


@dataclasses.dataclass(frozen=True)
class Dims:
    """Sizes of one attention call."""

    batch: int
    q_len: int
    kv_len: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads


def check_qkv(kind: str, query, key, value) -> Dims:
    """Validates query/key/value shapes and dtypes; returns their sizes."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        if jnp.ndim(x) != 4:
            raise ValueError(
                f"{kind}: {name} must be 4-D [batch, seq_len, heads, head_dim] (BTNH); "
                f"got shape {jnp.shape(x)}."
            )
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"{kind}: {name} must be a floating dtype; got {jnp.result_type(x)}.")
    B, T, N, H = query.shape
    Bk, S, K, Hk = key.shape
    if key.shape[:3] != value.shape[:3]:
        raise ValueError(
            f"{kind}: key {key.shape} and value {value.shape} must agree in batch, kv_len and "
            "num_kv_heads."
        )
    if Bk != B:
        raise ValueError(f"{kind}: query batch {B} != key batch {Bk}.")
    if Hk != H:
        raise ValueError(f"{kind}: query head_dim {H} != key head_dim {Hk}.")
    if K == 0 or N % K:
        raise ValueError(
            f"{kind}: num_heads ({N}) must be a multiple of num_kv_heads ({K}) for GQA/MQA."
        )
    if query.dtype != key.dtype or key.dtype != value.dtype:
        raise ValueError(
            f"{kind}: query, key and value must share a dtype; got {query.dtype}, {key.dtype}, "
            f"{value.dtype}. Cast them to one dtype first."
        )
    if T == 0 or S == 0:
        raise ValueError(f"{kind}: q_len ({T}) and kv_len ({S}) must be positive.")
    return Dims(B, T, S, N, K, H)


def accumulation_dtype(dtype) -> jnp.dtype:
    """Logits, softmax and normalisers run in float32, or wider for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


def check_scale(kind: str, scale, head_dim: int):
    """The logit scale: 1/sqrt(head_dim) unless given; a given one must be a real scalar."""
    if scale is None:
        return float(head_dim) ** -0.5
    if isinstance(scale, (bool, str)) or jnp.ndim(scale) != 0:
        raise ValueError(f"{kind}: scale must be a real scalar; got {scale!r}.")
    if not jnp.issubdtype(jnp.result_type(scale), jnp.number):
        raise ValueError(f"{kind}: scale must be a real scalar; got {scale!r}.")
    return scale


def check_soft_cap(kind: str, cap) -> float | None:
    """A logit soft cap must be a positive Python number (it is static), or None."""
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, (int, float, np.integer, np.floating)):
        raise ValueError(f"{kind}: logits_soft_cap must be a positive number; got {cap!r}.")
    if not cap > 0:
        raise ValueError(f"{kind}: logits_soft_cap must be positive; got {cap}.")
    return float(cap)


def soft_cap(logits: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(logits / cap): logits squashed into (-cap, cap), unchanged when cap is None."""
    return logits if cap is None else cap * jnp.tanh(logits / cap)


def heads_major_query(query: jax.Array, num_kv_heads: int) -> jax.Array:
    """[B, T, N, H] -> [B, K, G, T, H]."""
    B, T, N, H = query.shape
    return query.reshape(B, T, num_kv_heads, N // num_kv_heads, H).transpose(0, 2, 3, 1, 4)


def heads_major_kv(x: jax.Array) -> jax.Array:
    """[B, S, K, H] -> [B, K, S, H]."""
    return x.transpose(0, 2, 1, 3)


def seq_major_output(out: jax.Array) -> jax.Array:
    """[B, K, G, T, H] -> [B, T, N, H]."""
    B, K, G, T, H = out.shape
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, K * G, H)


def split_heads_4d(kind: str, name: str, x, dims: Dims, dtype_kind: str) -> jax.Array:
    """Checks a [B|1, N|1, T|1, S|1] mask or bias and returns it as [B|1, K|1, G|1, T|1, S|1]."""
    x = jnp.asarray(x)
    want = (dims.batch, dims.num_heads, dims.q_len, dims.kv_len)
    if x.ndim != 4 or any(d not in (1, w) for d, w in zip(x.shape, want)):
        raise ValueError(
            f"{kind}: {name} must be 4-D and broadcastable to [batch, num_heads, q_len, kv_len] "
            f"= {list(want)}; got shape {x.shape}."
        )
    if dtype_kind == "bool" and x.dtype != jnp.bool_:
        raise ValueError(f"{kind}: {name} must be boolean (True = may attend); got {x.dtype}.")
    if dtype_kind == "float" and not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{kind}: {name} must be a floating array; got {x.dtype}.")
    Bx, Nx, Tx, Sx = x.shape
    # Size-1 axes stay unbroadcast so a [B, 1, 1, S] padding mask stays O(S) in blocked kinds.
    Kx, Gx = (dims.num_kv_heads, dims.group) if Nx == dims.num_heads else (1, 1)
    return x.reshape(Bx, Kx, Gx, Tx, Sx)


def check_lengths(kind: str, name: str, lengths, batch: int) -> jax.Array | None:
    """Checks a per-example length vector [B] of integers."""
    if lengths is None:
        return None
    lengths = jnp.asarray(lengths)
    if lengths.shape != (batch,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(
            f"{kind}: {name} must be an integer array of shape [batch] = [{batch}]; "
            f"got shape {lengths.shape} and dtype {lengths.dtype}."
        )
    return lengths.astype(jnp.int32)


def zero_padding(query, key, value, q_lengths, kv_lengths):
    """query, key, value [B, L, ...] with positions at or past their lengths [B] set to 0.

    Hiding a padded key from the scores is not enough: it still enters the products with V, and
    the backward pass, with weight 0, and 0 * NaN = NaN (a padded query row likewise reaches the
    key gradient). Replacing what padding holds keeps a NaN or Inf there out of the output and
    out of every gradient. Lengths of None leave their arrays as they are.
    """
    return (
        _zero_past(query, q_lengths),
        _zero_past(key, kv_lengths),
        _zero_past(value, kv_lengths),
    )


def _zero_past(x, lengths):
    if lengths is None:
        return x
    valid_BL = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    valid = valid_BL.reshape(*valid_BL.shape, *(1,) * (x.ndim - 2))
    return jnp.where(valid, x, jnp.zeros((), x.dtype))


def zero_rows_without_keys(out, q_lengths, kv_lengths):
    """out [B, T, ...] with the rows the contract says are 0 set to 0: rows at or past their
    query length, and every row of an example with no keys (kv length 0). For kernels that
    leave such rows undefined; unchanged when both lengths are None."""
    if q_lengths is None and kv_lengths is None:
        return out
    B, T = out.shape[:2]
    visible = jnp.ones((B, T), bool)
    if q_lengths is not None:
        visible &= jnp.arange(T)[None, :] < q_lengths[:, None]
    if kv_lengths is not None:
        visible &= (kv_lengths > 0)[:, None]
    return jnp.where(visible.reshape(B, T, *(1,) * (out.ndim - 2)), out, 0).astype(out.dtype)


def check_segment_ids(kind: str, query_segment_ids, kv_segment_ids, dims: Dims):
    """Checks packed-sequence segment ids [B, T] and [B, S]; both or neither."""
    if (query_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError(
            f"{kind}: pass both query_segment_ids and key_value_segment_ids, or neither "
            "(for self-attention pass the same ids twice)."
        )
    if query_segment_ids is None:
        return None, None
    out = []
    for name, ids, n in (
        ("query_segment_ids", query_segment_ids, dims.q_len),
        ("key_value_segment_ids", kv_segment_ids, dims.kv_len),
    ):
        ids = jnp.asarray(ids)
        if ids.shape != (dims.batch, n) or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(
                f"{kind}: {name} must be an integer array of shape [{dims.batch}, {n}]; "
                f"got shape {ids.shape} and dtype {ids.dtype}."
            )
        out.append(ids.astype(jnp.int32))
    return tuple(out)


def check_window(kind: str, local_window_size) -> tuple[int, int] | None:
    """Normalises local_window_size to (left, right), as jax.nn.dot_product_attention does."""
    if local_window_size is None:
        return None
    if isinstance(local_window_size, (bool, np.bool_)):
        raise ValueError(f"{kind}: local_window_size must be an int or a pair; got a bool.")
    if isinstance(local_window_size, (int, np.integer)):
        local_window_size = (int(local_window_size), int(local_window_size))
    if (
        not isinstance(local_window_size, (tuple, list))
        or len(local_window_size) != 2
        or any(
            isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 0
            for w in local_window_size
        )
    ):
        raise ValueError(
            f"{kind}: local_window_size must be a non-negative int or a (left, right) pair of "
            f"non-negative static ints; got {local_window_size!r}."
        )
    return int(local_window_size[0]), int(local_window_size[1])
