"""How an exact kind's time compares with `jax.nn.dot_product_attention` on identical inputs.

Every row of the comparison is read against `dense`, so `dense` must be no slower than
jax.nn's XLA implementation. Both run in one process, interleaved call by call, so a neighbour
loading the machine slows both alike; each time is the median over repeats after warm-up.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import ops


@dataclasses.dataclass(frozen=True)
class Case:
    """One attention problem: query [B, T, N, H], key/value [B, T, K, H] and its masks."""

    batch: int
    seq_len: int
    num_heads: int
    head_dim: int
    is_causal: bool = False
    kv_lengths: bool = False
    num_kv_heads: int | None = None
    dtype: str = "float32"

    def describe(self) -> str:
        """A short label: B, T, N (K when grouped), H, masks and a non-float32 dtype."""
        kv = "" if self.num_kv_heads in (None, self.num_heads) else f" K{self.num_kv_heads}"
        masks = ("causal " if self.is_causal else "") + ("kv_len " if self.kv_lengths else "")
        masks += "" if self.dtype == "float32" else self.dtype
        return (
            f"B{self.batch} T{self.seq_len} N{self.num_heads}{kv} H{self.head_dim} "
            f"{masks.strip() or '-'}"
        )


def _grid() -> tuple[Case, ...]:
    shapes = ((16, 128, 4, 16), (64, 128, 4, 16), (16, 256, 4, 16))
    shapes += ((4, 1024, 8, 64), (1, 4096, 8, 64), (2, 512, 4, 128))
    cases = [Case(*s, is_causal=c) for s in shapes for c in (False, True)]
    cases += [
        Case(16, 256, 4, 16, kv_lengths=True),
        Case(4, 1024, 8, 64, is_causal=True, kv_lengths=True, num_kv_heads=2),
    ]
    return tuple(cases)


GRID = _grid()


@dataclasses.dataclass(frozen=True)
class Row:
    """Median milliseconds of one case: the kind and jax.nn, forward and forward+backward."""

    case: Case
    fwd_ms: float
    jax_fwd_ms: float
    fwd_bwd_ms: float
    jax_fwd_bwd_ms: float


def _jax_nn(query, key, value, **kwargs):
    return jax.nn.dot_product_attention(query, key, value, implementation="xla", **kwargs)


def _programs(op: Callable, case: Case, seed: int) -> tuple[Callable, Callable]:
    """Zero-argument calls of op's jitted forward and forward+backward on the case's inputs."""
    rng = np.random.default_rng(seed)
    B, T, N, H = case.batch, case.seq_len, case.num_heads, case.head_dim
    K = case.num_kv_heads or N
    q_BTNH, k_BTKH, v_BTKH, ct_BTNH = (
        jnp.asarray(rng.standard_normal(shape), case.dtype)
        for shape in ((B, T, N, H), (B, T, K, H), (B, T, K, H), (B, T, N, H))
    )
    lengths = {}
    if case.kv_lengths:
        lengths["key_value_seq_lengths"] = jnp.asarray(rng.integers(T // 2, T + 1, B), jnp.int32)

    def attend(q, k, v, lengths):
        return op(q, k, v, is_causal=case.is_causal, **lengths)

    def loss(q, k, v, lengths):
        return jnp.sum((attend(q, k, v, lengths) * ct_BTNH).astype(jnp.float32))

    fwd = jax.jit(attend)
    fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    return (
        lambda: fwd(q_BTNH, k_BTKH, v_BTKH, lengths),
        lambda: fwd_bwd(q_BTNH, k_BTKH, v_BTKH, lengths),
    )


def _median_ms(
    calls: Sequence[Callable], repeats: int, min_sample_s: float, min_total_s: float
) -> list[float]:
    """Median ms per call of each callable, timed interleaved: call 1, call 2, ..., repeat.

    A sample repeats a fast call until it lasts min_sample_s; a call whose warm-up (compile
    included) took over a second is timed once per sample, without a calibration call. Cheap
    calls get more than `repeats` rounds, up to min_total_s of timing, since a neighbour's load
    makes single samples noisy.
    """
    inner, once_s = [], []
    for call in calls:
        start = time.perf_counter()
        jax.block_until_ready(call())  # Compile and warm up.
        once = time.perf_counter() - start
        if once < 1.0:
            start = time.perf_counter()
            jax.block_until_ready(call())
            once = time.perf_counter() - start
        inner.append(max(1, round(min_sample_s / once)))
        once_s.append(inner[-1] * once)
    rounds = max(repeats, math.ceil(min_total_s / sum(once_s)))
    samples = [[] for _ in calls]
    for _ in range(rounds):
        for call, n, times in zip(calls, inner, samples, strict=True):
            start = time.perf_counter()
            for _ in range(n):
                out = call()
            jax.block_until_ready(out)
            times.append((time.perf_counter() - start) / n)
    return [1e3 * statistics.median(t) for t in samples]


def compare_case(
    case: Case,
    kind: str,
    *,
    repeats: int = 5,
    min_sample_s: float = 0.02,
    min_total_s: float = 0.5,
) -> Row:
    """Times one case for `kind` and jax.nn, forward and forward+backward."""
    fwd, fwd_bwd = _programs(ops.get(kind), case, seed=0)
    jax_fwd, jax_fwd_bwd = _programs(_jax_nn, case, seed=0)
    ms = _median_ms((fwd, jax_fwd), repeats, min_sample_s, min_total_s)
    ms += _median_ms((fwd_bwd, jax_fwd_bwd), repeats, min_sample_s, min_total_s)
    return Row(case, *ms)


def format_table(rows: Sequence[Row], kind: str) -> str:
    """A markdown table: ms of the kind and of jax.nn, and their ratio (< 1 = kind faster)."""
    lines = [
        f"| case | fwd {kind} ms | fwd jax.nn ms | fwd ratio | fwd+bwd {kind} ms "
        "| fwd+bwd jax.nn ms | fwd+bwd ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case.describe()} | {r.fwd_ms:.2f} | {r.jax_fwd_ms:.2f} | "
            f"{r.fwd_ms / r.jax_fwd_ms:.2f} | {r.fwd_bwd_ms:.2f} | {r.jax_fwd_bwd_ms:.2f} | "
            f"{r.fwd_bwd_ms / r.jax_fwd_bwd_ms:.2f} |"
        )
    return "\n".join(lines)
