"""Forward and forward+backward time of the state-carrying ops (retnet, gla, mamba2, deltanet,
gated_deltanet) against causal `jax.nn.dot_product_attention`, as n grows.

The ops alone, with fixed gates drawn as a layer would give them (decays in [0.9, 1), unit keys
for the delta rule, beta uniform in [0, 1)): the kernel's cost without the gate computation.
`python -m experiments.cost --config=...:state` measures the same kinds through the cost
harness, gates computed from the keys inside the measured function.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import ops
from attention_jax.bench.measure import median_seconds

BASELINE = "jax.nn"
KINDS = ("retnet", "mamba2", "gla", "deltanet", "gated_deltanet")


@dataclasses.dataclass(frozen=True)
class StateOpCost:
    kind: str
    n: int
    fwd_ms: float
    fwd_bwd_ms: float


def causal_call(kind: str, batch: int, n: int, num_heads: int, head_dim: int):
    """(f, (q, k, v)): f(q, k, v) runs `kind` causally with fixed gates of these sizes."""
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (batch, n, num_heads, head_dim)) for key in keys[:3])
    decay = jax.random.uniform(keys[3], (batch, n, num_heads), minval=0.9, maxval=1.0)
    if kind == BASELINE:
        return (lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)), (q, k, v)
    # The record says which gates the op takes (`ops.Gates`); the values are this benchmark's.
    spec, gates = ops.kind(kind).gates, {}
    if spec.decay is ops.Decay.PER_DIMENSION:
        gates["log_decay"] = jnp.log(jnp.repeat(decay[..., None], head_dim, axis=-1))
    elif spec.decay is ops.Decay.PER_HEAD:
        gates["log_decay"] = jnp.log(decay)
    if spec.beta:
        gates["beta"] = jax.random.uniform(keys[3], (batch, n, num_heads))
    if spec.unit_norm_qk:
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    op = ops.get(kind)
    return (lambda q, k, v: op(q, k, v, **gates, is_causal=True)), (q, k, v)


def _squared_sum(f, q, k, v):
    return jnp.sum(f(q, k, v) ** 2)


def measure(kinds, lengths, *, batch=1, num_heads=8, head_dim=64, repeats=3) -> list[StateOpCost]:
    """Median forward and forward+backward milliseconds per (kind, n)."""
    rows = []
    for kind in kinds:
        for n in lengths:
            f, args = causal_call(kind, batch, n, num_heads, head_dim)
            loss = jax.grad(functools.partial(_squared_sum, f), argnums=(0, 1, 2))
            fwd = median_seconds(jax.jit(f), *args, repeats=repeats)
            fwd_bwd = median_seconds(jax.jit(loss), *args, repeats=repeats)
            rows.append(StateOpCost(kind, n, 1e3 * fwd, 1e3 * fwd_bwd))
    return rows


def exponents(rows: list[StateOpCost]) -> dict[str, tuple[float, float]]:
    """{kind: (fwd, fwd+bwd)}: the fitted p of time ~ n^p, least squares in log-log."""
    fits = {}
    for kind in dict.fromkeys(r.kind for r in rows):
        mine = [r for r in rows if r.kind == kind]
        if len(mine) < 2:
            continue
        n = np.log([r.n for r in mine])
        fits[kind] = tuple(
            float(np.polyfit(n, np.log([getattr(r, t) for r in mine]), 1)[0])
            for t in ("fwd_ms", "fwd_bwd_ms")
        )
    return fits


def markdown(rows: list[StateOpCost]) -> str:
    fits = exponents(rows)
    lines = ["| kind | n | fwd ms | fwd+bwd ms |", "|---|---:|---:|---:|"]
    lines += [f"| {r.kind} | {r.n} | {r.fwd_ms:.1f} | {r.fwd_bwd_ms:.1f} |" for r in rows]
    lines += ["", "| kind | exponent fwd | exponent fwd+bwd |", "|---|---:|---:|"]
    lines += [f"| {kind} | {f:.2f} | {b:.2f} |" for kind, (f, b) in fits.items()]
    return "\n".join(lines) + "\n"
