"""The gates of a state-carrying kind, computed from the layer input as each paper does.

The kind's record says what its op takes (`ops.Gates`); this module owns the parameters:
- GLA (Yang et al. 2024): log_decay = log_sigmoid(W_up W_down x + b) / 16, a rank-16
  projection to one gate per key dimension; the temperature keeps decays near 1 at init.
- Mamba-2 (Dao and Gu 2024) and Gated DeltaNet (Yang et al. 2025): a step
  dt = softplus(W x + dt_bias) and a rate A = exp(A_log) per head; log_decay = -A dt. Mamba-2
  also scales its input by dt, here the key. dt starts log-uniform in [1e-3, 0.1], A uniform
  in [1, 16].
- DeltaNet and Gated DeltaNet: beta = sigmoid(W x), and q, k L2-normalised per head.
- RetNet: fixed decays, the op's default; no parameters.
Each paper also normalises every head's output before the output projection (RetNet's
GroupNorm, GLA's and DeltaNet's RMSNorm, Mamba-2's gated RMSNorm), since with no softmax
normaliser its scale grows with the state; `normalize_output` is a per-head RMSNorm.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import ops
from attention_jax.ops import gates as gate_ranges


def _inverse_softplus(y: jax.Array) -> jax.Array:
    return y + jnp.log(-jnp.expm1(-y))


def _log_uniform(low: float, high: float):
    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype, math.log(low), math.log(high))
        return jnp.exp(u)

    return init


def unit_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / ||x|| over the last axis, computed in float32."""
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 / norm).astype(x.dtype)


class StateGates(nnx.Module):
    """Computes `ops.Gates` for inputs x [B, T, D] with K kv heads of head_dim Hk.

    Calling it with (x, q, k) returns (q, k, gates): q and k as the kind's op wants them
    (normalised, or k scaled by the step) and gates {argument: array} for the op;
    `normalize_output` then takes the op's output.
    """

    def __init__(
        self,
        spec: ops.Gates,
        in_features: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.spec = spec
        typed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        decay_down = decay_up = step = step_bias = log_rate = beta = None
        if spec.decay is ops.Decay.PER_DIMENSION:
            rank = gate_ranges.GLA_GATE_RANK
            decay_down = nnx.Linear(in_features, rank, use_bias=False, **typed)
            decay_up = nnx.LinearGeneral(rank, (num_kv_heads, head_dim), **typed)
        elif spec.decay is ops.Decay.PER_HEAD:
            step = nnx.Linear(in_features, num_kv_heads, use_bias=False, **typed)
            dt = _log_uniform(*gate_ranges.MAMBA_STEP_RANGE)(rngs.params(), (num_kv_heads,))
            step_bias = nnx.Param(_inverse_softplus(dt).astype(param_dtype))
            low, high = gate_ranges.MAMBA_RATE_RANGE
            rate = jax.random.uniform(rngs.params(), (num_kv_heads,), minval=low, maxval=high)
            log_rate = nnx.Param(jnp.log(rate).astype(param_dtype))
        if spec.beta:
            beta = nnx.Linear(in_features, num_kv_heads, **typed)
        self.decay_down, self.decay_up = decay_down, decay_up
        self.step, self.step_bias, self.log_rate = step, step_bias, log_rate
        self.beta = beta
        self.output_norm = nnx.RMSNorm(head_dim, **typed)

    def normalize_output(self, out: jax.Array) -> jax.Array:
        """The op's output [B, T, N, Hv], RMS-normalised per head."""
        return self.output_norm(out)

    def __call__(self, x: jax.Array, q: jax.Array, k: jax.Array):
        """x [B, T, D], q [B, T, N, Hk], k [B, T, K, Hk] -> (q, k, {argument: gate})."""
        gates = {}
        if self.decay_down is not None:
            logits = self.decay_up(self.decay_down(x)).astype(jnp.float32)
            gates["log_decay"] = jax.nn.log_sigmoid(logits) / gate_ranges.GLA_GATE_TEMPERATURE
        if self.step is not None:
            pre = self.step(x).astype(jnp.float32) + self.step_bias[...].astype(jnp.float32)
            dt_BTK = jax.nn.softplus(pre)
            gates["log_decay"] = -jnp.exp(self.log_rate[...].astype(jnp.float32)) * dt_BTK
            if self.spec.step_scales_key:
                k = k * dt_BTK[..., None].astype(k.dtype)
        if self.beta is not None:
            gates["beta"] = jax.nn.sigmoid(self.beta(x).astype(jnp.float32))
        if self.spec.unit_norm_qk:
            q, k = unit_norm(q), unit_norm(k)
        return q, k, gates
