"""Attention kinds by name, so configs can say `kind='flash'` and swap variants with one string."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from attention_jax.ops import sparse, state_decoding
from attention_jax.ops.bigbird import bigbird, bigbird_pattern
from attention_jax.ops.deltanet import deltanet
from attention_jax.ops.dense import dense
from attention_jax.ops.flash import flash
from attention_jax.ops.gated_deltanet import gated_deltanet
from attention_jax.ops.gates import Decay, Gates
from attention_jax.ops.gla import gla
from attention_jax.ops.kinds import Decoding, Kind, OwnedState
from attention_jax.ops.linear import based, cosformer, every_pair_pattern, linear, performer
from attention_jax.ops.linformer import linformer
from attention_jax.ops.mamba2 import mamba2
from attention_jax.ops.moba import moba, moba_state_init, moba_step
from attention_jax.ops.retnet import retnet
from attention_jax.ops.strided import strided, strided_pattern
from attention_jax.ops.vendor import rules

_KINDS: dict[str, Kind] = {}
# The kind a layer or model uses when none is named, and the baseline comparisons read against.
DEFAULT_KIND = "dense"


def register(record: Kind) -> Kind:
    """Adds a kind (an `ops.Kind` record: its op, pattern and capabilities) under its name."""
    if not isinstance(record, Kind):
        raise ValueError(
            "ops.register takes an ops.Kind record (op, pattern, time_exponent, decoding, ...); "
            f"got {type(record).__name__}."
        )
    existing = _KINDS.get(record.name)
    if existing is not None and existing != record:
        raise ValueError(f"attention kind {record.name!r} is already registered as {existing}.")
    _KINDS[record.name] = record
    return record


def unregister(name: str) -> None:
    """Removes a kind registered from a notebook or a test (built-in kinds stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"unregister: {name!r} is a built-in kind and stays registered.")
    _lookup(name)
    del _KINDS[name]


def names() -> tuple[str, ...]:
    """All registered kind names, sorted."""
    return tuple(sorted(_KINDS))


def names_in_order() -> tuple[str, ...]:
    """Registered names in registration order (exact, sparse, kernelized, then later ones):
    the order comparison tables list kinds in."""
    return tuple(_KINDS)


def _lookup(name: str) -> Kind:
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown attention kind {name!r}; choose one of {', '.join(names())}."
        ) from None


def kind(name: str) -> Kind:
    """The record of the kind registered as `name`."""
    return _lookup(name)


def get(name: str) -> Callable:
    """The op registered as `name`."""
    return _lookup(name).op


def attention(query, key, value, bias=None, mask=None, *, kind: str = DEFAULT_KIND, **kwargs):
    """Runs the op registered as `kind` with the shared calling convention."""
    return get(kind)(query, key, value, bias, mask, **kwargs)


def pattern_mask(kind: str, q_len: int, kv_len: int, **params) -> np.ndarray:
    """Bool [q_len, kv_len]: the (query, key) pairs `kind` lets through with these params.

    Causal, length and segment masks come on top of it. For every exact-softmax kind,
    `get(kind)(q, k, v, **params)` equals `dense(q, k, v, mask=pattern[None, None])` with
    `pattern = pattern_mask(kind, T, S, **params)`. Kernelized kinds (linear, performer, ...)
    re-weight every pair instead of dropping any, so their pattern is all True.
    """
    return _lookup(kind).pattern(q_len, kv_len, **params)


def banded_layout(q_len: int, kv_len: int, params: dict) -> dict:
    """block_sparse's default layout: each query block with its key block and both neighbours."""
    block_size = params.get("block_size", 64)
    rows = np.arange(-(-q_len // block_size))[:, None]
    cols = np.arange(-(-kv_len // block_size))[None, :]
    return {"layout": np.abs(rows - cols) <= 1}


def sqrt_stride(q_len: int, kv_len: int, params: dict) -> dict:
    """strided's default stride: about sqrt(n), so each query sees about 2 sqrt(n) keys."""
    return {"stride": max(1, math.isqrt(kv_len))}


def served(name: str) -> tuple[str, ...]:
    """The implementations that serve the built-in kind `name` (`rules.SERVES`)."""
    return tuple(i for i in rules.IMPLEMENTATIONS if name in rules.SERVES[i])


_NO_STATE_TO_CARRY = (
    "it projects the whole key sequence at once (Linformer), so it has no causal or "
    "incremental form"
)
_WINDOW = (128, 128)
for _record in (
    Kind(
        "dense",
        dense,
        sparse.full_pattern,
        2.0,
        window_in_decoding=True,
        implementations=served("dense"),
    ),
    Kind(
        "flash",
        flash,
        sparse.full_pattern,
        2.0,
        window_in_decoding=True,
        implementations=served("flash"),
    ),
    Kind(
        "local",
        sparse.local,
        sparse.local_pattern,
        1.0,
        decoding=Decoding.WINDOW,
        window_in_decoding=True,
        defaults={"local_window_size": _WINDOW},
        implementations=served("local"),
    ),
    Kind(
        "block_sparse",
        sparse.block_sparse,
        sparse.block_sparse_pattern,
        1.0,
        pattern_in_decoding=True,
        length_defaults=banded_layout,
        implementations=served("block_sparse"),
    ),
    Kind(
        "longformer",
        sparse.longformer,
        sparse.longformer_pattern,
        1.0,
        pattern_in_decoding=True,
        defaults={"local_window_size": _WINDOW, "global_positions": (0,)},
        implementations=served("longformer"),
    ),
    # Strided attends to about sqrt(n) keys per query.
    Kind(
        "strided",
        strided,
        strided_pattern,
        1.5,
        pattern_in_decoding=True,
        length_defaults=sqrt_stride,
    ),
    Kind(
        "bigbird",
        bigbird,
        bigbird_pattern,
        1.0,
        pattern_in_decoding=True,
        owned_state=OwnedState.LAYOUT_SEED,
        implementations=served("bigbird"),
    ),
    Kind("linear", linear, every_pair_pattern, 1.0, decoding=Decoding.RECURRENT),
    Kind(
        "performer",
        performer,
        every_pair_pattern,
        1.0,
        decoding=Decoding.RECURRENT,
        feature_map="favor",
        owned_state=OwnedState.RANDOM_FEATURES,
    ),
    Kind(
        "based", based, every_pair_pattern, 1.0, decoding=Decoding.RECURRENT, feature_map="taylor"
    ),
    Kind(
        "cosformer",
        cosformer,
        every_pair_pattern,
        1.0,
        decoding=Decoding.RECURRENT,
        feature_map="cosformer",
        takes_horizon=True,
    ),
    # MoBA's pairs depend on q and k (each query's top_k blocks), so no static pattern narrows
    # them: every pair may be attended. Time is linear at a fixed block_size and top_k.
    Kind(
        "moba",
        moba,
        every_pair_pattern,
        1.0,
        decoding=Decoding.BLOCKS,
        state_init=moba_state_init,
        state_step=moba_step,
        defaults={"block_size": 64, "top_k": 3},
    ),
    Kind(
        "linformer",
        linformer,
        every_pair_pattern,
        1.0,
        causal=False,
        decoding=Decoding.NONE,
        no_decoding_reason=_NO_STATE_TO_CARRY,
        owned_state=OwnedState.LEARNED_PROJECTIONS,
    ),
):
    register(_record)


def _state_kind(name, op, init, step, gates) -> Kind:
    """A state-carrying kind: causal only, linear time, decoded by its own step."""
    return Kind(
        name,
        op,
        every_pair_pattern,
        1.0,
        bidirectional=False,
        decoding=Decoding.STATE,
        state_init=init,
        state_step=step,
        gates=gates,
    )


for _record in (
    _state_kind(
        "retnet",
        retnet,
        state_decoding.retnet_init,
        state_decoding.retnet_step,
        Gates(decay=Decay.FIXED),
    ),
    _state_kind(
        "gla",
        gla,
        state_decoding.shared_decay_init,
        state_decoding.gla_step,
        Gates(decay=Decay.PER_DIMENSION),
    ),
    _state_kind(
        "mamba2",
        mamba2,
        state_decoding.shared_decay_init,
        state_decoding.mamba2_step,
        Gates(decay=Decay.PER_HEAD, step_scales_key=True),
    ),
    _state_kind(
        "deltanet",
        deltanet,
        state_decoding.delta_init,
        state_decoding.deltanet_step,
        Gates(beta=True, unit_norm_qk=True),
    ),
    _state_kind(
        "gated_deltanet",
        gated_deltanet,
        state_decoding.delta_init,
        state_decoding.gated_deltanet_step,
        Gates(decay=Decay.PER_HEAD, beta=True, unit_norm_qk=True),
    ),
):
    register(_record)
_BUILT_IN = frozenset(_KINDS)
