"""Attention kinds by name, so configs can say `kind='flash'` and swap variants with one string."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attention_jax.ops import sparse
from attention_jax.ops.bigbird import bigbird, bigbird_pattern
from attention_jax.ops.dense import dense
from attention_jax.ops.flash import flash
from attention_jax.ops.linear import based, cosformer, every_pair_pattern, linear, performer
from attention_jax.ops.linformer import linformer
from attention_jax.ops.strided import strided, strided_pattern

_KINDS: dict[str, Callable] = {}
_PATTERNS: dict[str, Callable] = {}


def register(name: str, op: Callable, pattern: Callable) -> Callable:
    """Adds an op under `name` with its pattern function (q_len, kv_len, **params) -> bool [T, S].

    The op must follow the contract of `dense`.
    """
    if name in _KINDS and _KINDS[name] is not op:
        raise ValueError(f"attention kind {name!r} is already registered to {_KINDS[name]}.")
    _KINDS[name] = op
    _PATTERNS[name] = pattern
    return op


def names() -> tuple[str, ...]:
    """All registered kind names, sorted."""
    return tuple(sorted(_KINDS))


def get(kind: str) -> Callable:
    """The op registered as `kind`."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown attention kind {kind!r}; choose one of {', '.join(names())}."
        ) from None


def attention(query, key, value, bias=None, mask=None, *, kind: str = "dense", **kwargs):
    """Runs the op registered as `kind` with the shared calling convention."""
    return get(kind)(query, key, value, bias, mask, **kwargs)


def pattern_mask(kind: str, q_len: int, kv_len: int, **params) -> np.ndarray:
    """Bool [q_len, kv_len]: the (query, key) pairs `kind` lets through with these params.

    Causal, length and segment masks come on top of it. For every exact-softmax kind,
    `get(kind)(q, k, v, **params)` equals `dense(q, k, v, mask=pattern[None, None])` with
    `pattern = pattern_mask(kind, T, S, **params)`. Kernelized kinds (linear, performer, ...)
    re-weight every pair instead of dropping any, so their pattern is all True.
    """
    get(kind)
    return _PATTERNS[kind](q_len, kv_len, **params)


register("dense", dense, sparse.full_pattern)
register("flash", flash, sparse.full_pattern)
register("local", sparse.local, sparse.local_pattern)
register("block_sparse", sparse.block_sparse, sparse.block_sparse_pattern)
register("longformer", sparse.longformer, sparse.longformer_pattern)
register("strided", strided, strided_pattern)
register("bigbird", bigbird, bigbird_pattern)
register("linear", linear, every_pair_pattern)
register("performer", performer, every_pair_pattern)
register("based", based, every_pair_pattern)
register("cosformer", cosformer, every_pair_pattern)
register("linformer", linformer, every_pair_pattern)
