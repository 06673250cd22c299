"""The record of an attention kind: what layers, decoding, models and the suite know about it.

`ops.register(Kind(...))` is the one way a kind comes in; `ops.kind(name)` returns its record
and `ops.get(name)` its op. Code outside `ops/` reads capabilities from the record and never
tests a kind's name, so a kind defined in a user's file (or a test) works in the layers, the
models, decoding, `ops.attention_map`, the cost harness and the comparison suites:

    def my_window(query, key, value, bias=None, mask=None, **contract):
        return ops.local(query, key, value, bias, mask, **contract)

    ops.register(ops.Kind(
        "my_window", my_window, pattern=ops.sparse.local_pattern, time_exponent=1.0,
        decoding=ops.Decoding.WINDOW, window_in_decoding=True,
        defaults={"local_window_size": (32, 0)},
    ))
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from attention_jax.ops.gates import Gates
from attention_jax.ops.vendor.rules import IMPLEMENTATIONS


class Decoding(enum.Enum):
    """How a kind decodes token by token (`MultiHeadAttention.init_cache`, decode=True)."""

    KV = "kv"  # a cache of every past key and value
    WINDOW = "window"  # a ring buffer of the last local_window_size[0] keys and values
    RECURRENT = "recurrent"  # a fixed-size state: phi(K)^T V and its normaliser
    STATE = "state"  # a fixed-size state advanced by the kind's own state_step (gated kinds)
    # Every past key and value, read through the blocks the kind's own state_step selects (MoBA).
    BLOCKS = "blocks"
    NONE = "none"  # no causal, incremental form


class OwnedState(enum.Enum):
    """Arrays a kind's op takes as arguments that a layer must own and keep between calls."""

    RANDOM_FEATURES = "random_features"  # Performer's projection: drawn, redrawable, not trained
    LEARNED_PROJECTIONS = "learned_projections"  # Linformer's E and F: trained, [k, max_len]
    LAYOUT_SEED = "layout_seed"  # BigBird's random blocks: a seed fixed at init


@dataclasses.dataclass(frozen=True)
class Kind:
    """Everything the rest of the code needs to know about one attention kind.

    Attributes:
      name: the registry name (a config's `attention`).
      op: the pure function, on the op contract of `ops.dense`.
      pattern: (q_len, kv_len, **params) -> bool [T, S], the (query, key) pairs it lets
        through (all True for kinds that re-weight every pair).
      time_exponent: the theoretical p of time ~ n^p at fixed parameters, set beside the
        measured exponent in the comparison tables.
      causal: whether `is_causal=True` is supported.
      bidirectional: whether `is_causal=False` is supported (False for the state-carrying
        kinds, whose state holds only the past: decoders only).
      decoding: its token-by-token form (`Decoding`).
      no_decoding_reason: why not, for Decoding.NONE.
      pattern_in_decoding: a KV-cache kind that masks the cache with its [max_len, max_len]
        pattern (sparse kinds); False for kinds that see every cached key.
      window_in_decoding: a KV-cache or window kind whose `local_window_size` limits the keys a
        decoded token sees (for pattern kinds the pattern carries the window instead).
      state_init: for Decoding.STATE and BLOCKS, (batch, num_heads, num_kv_heads, head_dim,
        value_dim) -> an empty state; a BLOCKS kind's also takes max_len= and those of its
        parameters it names.
      state_step: for Decoding.STATE and BLOCKS, (state, q, k, v, *, scale, **gates) ->
        (out, state),
        advancing the state through the new tokens q [B, T, N, Hk], k [B, T, K, Hk],
        v [B, T, K, Hv] with the op's own gate arguments for those tokens.
      gates: what the op takes beside q, k and v that a layer computes from its input
        (`ops.Gates`), or None.
      feature_map: the recurrent form's feature map name; None takes it from the kind's
        `feature_map` parameter (as `linear` does), default elu.
      defaults: parameters a layer starts from when the config gives none.
      length_defaults: (q_len, kv_len, params) -> parameters that depend on the length (filled
        in per call, e.g. a stride of about sqrt(n)), for those the config leaves out.
      owned_state: the arrays a layer must own for it (`OwnedState`), or None.
      takes_horizon: its op takes the layer's `max_len` as `max_len` (cosformer's M).
      implementations: the `implementation=` values its op serves (`ops.IMPLEMENTATIONS`);
        ('xla',) for kinds with one engine, whose op then takes no `implementation`.
    """

    name: str
    op: Callable
    pattern: Callable[..., np.ndarray]
    time_exponent: float
    causal: bool = True
    bidirectional: bool = True
    decoding: Decoding = Decoding.KV
    state_init: Callable | None = None
    state_step: Callable | None = None
    gates: Gates | None = None
    no_decoding_reason: str = ""
    pattern_in_decoding: bool = False
    window_in_decoding: bool = False
    feature_map: str | None = None
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    length_defaults: Callable[[int, int, dict], dict] | None = None
    owned_state: OwnedState | None = None
    takes_horizon: bool = False
    implementations: tuple[str, ...] = ("xla",)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"Kind: name must be a non-empty string; got {self.name!r}.")
        if not callable(self.op) or not callable(self.pattern):
            raise ValueError(f"Kind {self.name!r}: op and pattern must be callables.")
        if not isinstance(self.decoding, Decoding):
            raise ValueError(
                f"Kind {self.name!r}: decoding must be an ops.Decoding; got {self.decoding!r}."
            )
        if self.decoding is Decoding.NONE and not self.no_decoding_reason:
            raise ValueError(f"Kind {self.name!r}: say why it cannot decode (no_decoding_reason).")
        if self.decoding is not Decoding.NONE and not self.causal:
            raise ValueError(f"Kind {self.name!r}: decoding needs a causal form (causal=True).")
        if not (self.causal or self.bidirectional):
            raise ValueError(f"Kind {self.name!r}: it must support causal or bidirectional calls.")
        stepped = self.state_init is not None and self.state_step is not None
        if (self.decoding in (Decoding.STATE, Decoding.BLOCKS)) != stepped:
            raise ValueError(
                f"Kind {self.name!r}: give state_init and state_step exactly when decoding is "
                "Decoding.STATE or Decoding.BLOCKS."
            )
        if self.gates is not None and not isinstance(self.gates, Gates):
            raise ValueError(f"Kind {self.name!r}: gates must be an ops.Gates; got {self.gates!r}.")
        unknown = set(self.implementations) - set(IMPLEMENTATIONS)
        if "xla" not in self.implementations or unknown:
            raise ValueError(
                f"Kind {self.name!r}: implementations must include 'xla' and name only "
                f"{', '.join(IMPLEMENTATIONS)}; got {self.implementations!r}."
            )
        if len(self.implementations) > 1 and not self.takes("implementation"):
            raise ValueError(
                f"Kind {self.name!r}: its op must take implementation= to serve "
                f"{self.implementations!r}."
            )
        if not self.time_exponent > 0:
            raise ValueError(
                f"Kind {self.name!r}: time_exponent must be positive; got {self.time_exponent!r}."
            )

    def takes(self, parameter: str) -> bool:
        """Whether the op has a keyword parameter of this name (not through **kwargs)."""
        return parameter in inspect.signature(self.op).parameters

    @property
    def soft_cap(self) -> bool:
        """Whether it has logits to cap (`logits_soft_cap`)."""
        return self.takes("logits_soft_cap")

    def params_for(self, q_len: int, kv_len: int, given: Mapping[str, Any]) -> dict:
        """`given` completed by the length-dependent defaults it leaves out."""
        params = dict(given)
        if self.length_defaults is not None:
            for name, value in self.length_defaults(q_len, kv_len, params).items():
                params.setdefault(name, value)
        return params
