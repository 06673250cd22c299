"""Per-token decoding cost as the position grows: a recurrent linear state against a KV cache.

Kernelized attention decodes with a fixed-size state, so a step should cost the same at any
position; softmax attention with a KV cache reads every cached key, so its step grows with the
position. Both are measured at the same positions, in one process.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from attention_jax import ops
from attention_jax.bench.measure import Shape, median_seconds


@dataclasses.dataclass(frozen=True)
class DecodeCost:
    """Median seconds of one decoding step at `position` tokens of context."""

    position: int
    linear_step_s: float
    kv_cache_step_s: float


def _state_after(position: int, shape: Shape, feature_map, key) -> ops.LinearState:
    """The recurrent state after `position` random tokens, built by the decoding step itself."""
    B, K, H = shape.batch, shape.num_kv_heads, shape.head_dim
    dtype = jnp.dtype(shape.dtype)
    state = ops.linear_state_init(B, K, H, feature_map=feature_map)

    def step(state, key):
        kq, kk, kv = jax.random.split(key, 3)
        q = jax.random.normal(kq, (B, shape.num_heads, H), dtype)
        k, v = (jax.random.normal(x, (B, K, H), dtype) for x in (kk, kv))
        return ops.linear_step(state, q, k, v, feature_map=feature_map)[1], None

    return jax.jit(lambda s, keys: jax.lax.scan(step, s, keys)[0])(
        state, jax.random.split(key, position)
    )


@jax.jit
def kv_cache_step(q_t, k_cache, v_cache):
    """Softmax decoding of one query [B, N, H] over a KV cache [B, position, K, H]."""
    return jax.nn.dot_product_attention(q_t[:, None], k_cache, v_cache)[:, 0]


def measure_decode(
    positions, shape: Shape, *, feature_map="elu", warmup: int = 2, repeats: int = 20
) -> list[DecodeCost]:
    """Times one jitted decoding step of each form at every position."""
    B, N, K, H = shape.batch, shape.num_heads, shape.num_kv_heads, shape.head_dim
    dtype = jnp.dtype(shape.dtype)
    kq, kk, kv, kstate = jax.random.split(jax.random.key(0), 4)
    q_t = jax.random.normal(kq, (B, N, H), dtype)
    k_t, v_t = (jax.random.normal(x, (B, K, H), dtype) for x in (kk, kv))
    linear_step = jax.jit(lambda s, q, k, v: ops.linear_step(s, q, k, v, feature_map=feature_map))

    rows = []
    for position in positions:
        state = _state_after(position, shape, feature_map, kstate)
        k_cache, v_cache = (
            jax.random.normal(x, (B, position, K, H), dtype) for x in jax.random.split(kk)
        )
        rows.append(
            DecodeCost(
                position,
                median_seconds(linear_step, state, q_t, k_t, v_t, warmup=warmup, repeats=repeats),
                median_seconds(
                    kv_cache_step, q_t, k_cache, v_cache, warmup=warmup, repeats=repeats
                ),
            )
        )
    return rows


def markdown(rows: list[DecodeCost]) -> str:
    """A table of step times in microseconds, each relative to the first position."""
    first = rows[0]
    lines = [
        "| position | linear step µs | vs first | KV-cache step µs | vs first |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.position} | {r.linear_step_s * 1e6:.0f} | "
            f"{r.linear_step_s / first.linear_step_s:.2f} | {r.kv_cache_step_s * 1e6:.0f} | "
            f"{r.kv_cache_step_s / first.kv_cache_step_s:.2f} |"
        )
    return "\n".join(lines) + "\n"
