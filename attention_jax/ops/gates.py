"""The gates of a state-carrying kind: what its op takes beside q, k and v, per token.

The ops stay pure: gates are explicit arrays (`log_decay`, `beta`). A layer computes them from
its input as each paper does (`layers.StateGates`); a kind's record says which it needs with
`Gates`, so a layer, a benchmark or a test can supply them for any kind, including one defined
in a user's file.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import jax
import jax.numpy as jnp


class Decay(enum.Enum):
    """How the state forgets."""

    FIXED = "fixed"  # RetNet: a constant gamma per head, the op's own default; no argument
    PER_DIMENSION = "per_dimension"  # GLA: log_decay [B, S, K, Hk], one per key dimension
    PER_HEAD = "per_head"  # Mamba-2, Gated DeltaNet: log_decay [B, S, K], one per head


@dataclasses.dataclass(frozen=True)
class Gates:
    """The per-token arguments of a state-carrying op, and how a layer derives q and k for it.

    Attributes:
      decay: a `Decay`, or None for a state that never forgets (DeltaNet).
      beta: the op takes write strengths `beta` [B, S, K] in [0, 1] (the delta rule).
      step_scales_key: the layer multiplies k by the step size dt (Mamba-2's discretised
        input, dt * B x, with B the key and x the value).
      unit_norm_qk: the layer L2-normalises q and k per head (the delta rule is stable only
        for ||k|| <= 1; DeltaNet and Gated DeltaNet normalise both).
    """

    decay: Decay | None = None
    beta: bool = False
    step_scales_key: bool = False
    unit_norm_qk: bool = False

    def __post_init__(self):
        if self.decay is not None and not isinstance(self.decay, Decay):
            raise ValueError(f"Gates: decay must be an ops.Decay or None; got {self.decay!r}.")
        if self.step_scales_key and self.decay is not Decay.PER_HEAD:
            raise ValueError("Gates: step_scales_key needs a per-head step, decay=Decay.PER_HEAD.")

    @property
    def arguments(self) -> tuple[str, ...]:
        """The op's keyword arguments these gates fill."""
        names = ("beta",) if self.beta else ()
        if self.decay in (Decay.PER_DIMENSION, Decay.PER_HEAD):
            names += ("log_decay",)
        return names

    def example(self, key: jax.Array, batch: int, length: int, num_kv_heads: int, head_dim: int):
        """Random gates {argument: array} for inputs k [batch, length, num_kv_heads, head_dim],
        drawn from the ranges the layer's gates start in (for tests and benchmarks)."""
        decay_key, beta_key = jax.random.split(key)
        gates = {}
        if self.decay is Decay.PER_DIMENSION:
            logits = jax.random.normal(decay_key, (batch, length, num_kv_heads, head_dim))
            gates["log_decay"] = jax.nn.log_sigmoid(logits) / GLA_GATE_TEMPERATURE
        elif self.decay is Decay.PER_HEAD:
            rate_key, step_key = jax.random.split(decay_key)
            rate = jax.random.uniform(
                rate_key, (num_kv_heads,), minval=MAMBA_RATE_RANGE[0], maxval=MAMBA_RATE_RANGE[1]
            )
            step = jnp.exp(
                jax.random.uniform(
                    step_key,
                    (batch, length, num_kv_heads),
                    minval=math.log(MAMBA_STEP_RANGE[0]),
                    maxval=math.log(MAMBA_STEP_RANGE[1]),
                )
            )
            gates["log_decay"] = -rate * step
        if self.beta:
            gates["beta"] = jax.nn.sigmoid(
                jax.random.normal(beta_key, (batch, length, num_kv_heads))
            )
        return gates

    def derive(self, key: jax.Array) -> tuple[jax.Array, dict]:
        """(keys, gates) computed from keys [B, S, K, Hk] alone, for benchmarks that call the
        op without a layer: the keys the op expects (unit norm for the delta rule) and gates in
        the ranges a layer's start in, as differentiable functions of the keys."""
        gates = {}
        pooled = jnp.mean(key.astype(jnp.float32), axis=-1)  # [B, S, K]
        if self.decay is Decay.PER_DIMENSION:
            gates["log_decay"] = jax.nn.log_sigmoid(key.astype(jnp.float32)) / GLA_GATE_TEMPERATURE
        elif self.decay is Decay.PER_HEAD:
            gates["log_decay"] = -jax.nn.softplus(pooled) * MAMBA_STEP_RANGE[1]
        if self.beta:
            gates["beta"] = jax.nn.sigmoid(pooled)
        if self.unit_norm_qk:
            norm = jnp.linalg.norm(key.astype(jnp.float32), axis=-1, keepdims=True)
            key = (key / jnp.maximum(norm, 1e-6)).astype(key.dtype)
        return key, gates


# GLA's log-sigmoid gate is divided by this temperature, so decays start close to 1.
GLA_GATE_TEMPERATURE = 16.0
# GLA's gate projection is low rank: D -> this -> K * Hk.
GLA_GATE_RANK = 16
# Mamba-2's step dt starts log-uniform in this range, and its rate A = exp(A_log) uniform in
# the next (so a = -A dt, the log decay, starts in [-1.6, -0.001]).
MAMBA_STEP_RANGE = (1e-3, 1e-1)
MAMBA_RATE_RANGE = (1.0, 16.0)
