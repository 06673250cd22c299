"""Cost of one attention kind at one sequence length: wall time, peak memory and FLOPs.

Time is the median of repeated calls after warm-up (`block_until_ready`), forward and
forward+backward. Memory is XLA's compiled buffer assignment (arguments + outputs + temporaries),
known before running, so a case too large for the machine is reported and not run. FLOPs come
from the jaxpr with every loop step counted (`flops.count_flops`); XLA's own count is kept too.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from attention_jax.bench import flops as flops_lib


@dataclasses.dataclass(frozen=True)
class Shape:
    """The attention problem: batch, heads, head_dim, dtype, mask structure; n is swept."""

    batch: int = 1
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int = 64
    dtype: str = "float32"
    is_causal: bool = False
    local_window_size: tuple[int, int] | None = None

    def describe(self) -> str:
        """A one-line summary for plot titles and logs."""
        mask = "causal" if self.is_causal else "bidirectional"
        if self.local_window_size is not None:
            mask += f", window {tuple(self.local_window_size)}"
        return (
            f"B={self.batch} N={self.num_heads} K={self.num_kv_heads} H={self.head_dim} "
            f"{self.dtype} {mask}"
        )

    def mask_kwargs(self) -> dict:
        """The structured-mask arguments of the op contract for this problem."""
        kwargs = {"is_causal": self.is_causal}
        if self.local_window_size is not None:
            kwargs["local_window_size"] = tuple(self.local_window_size)
        return kwargs


@dataclasses.dataclass(frozen=True)
class Cost:
    """One measured (kind, n) point; seconds, bytes, FLOPs; NaN where not measured."""

    kind: str
    n: int
    fwd_s: float
    fwd_bwd_s: float
    fwd_bytes: float
    fwd_bwd_bytes: float
    fwd_flops: float
    fwd_bwd_flops: float
    xla_fwd_flops: float
    note: str = ""
    # The engine that ran it: 'xla', a vendor kernel ('cudnn', 'pallas_tpu', ...), or 'torch'.
    implementation: str = "xla"

    @property
    def fwd_gflops_per_s(self) -> float:
        """Achieved throughput on the kind's own FLOPs (skipped blocks are not counted)."""
        return self.fwd_flops / self.fwd_s / 1e9


def median_seconds(
    fn: Callable, *args, warmup: int = 1, repeats: int = 5, sync: Callable = jax.block_until_ready
) -> float:
    """Median wall time of `sync(fn(*args))` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        sync(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(compiled) -> float:
    """Arguments + outputs + temporaries of a compiled program (aliased buffers counted once)."""
    m = compiled.memory_analysis()
    if m is None:  # some backends give no analysis
        return math.nan
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def make_inputs(shape: Shape, n: int, seed: int = 0):
    """Random query [B, n, N, H] and key/value [B, n, K, H]."""
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    dtype = jnp.dtype(shape.dtype)
    q = jax.random.normal(kq, (shape.batch, n, shape.num_heads, shape.head_dim), dtype)
    kv_shape = (shape.batch, n, shape.num_kv_heads, shape.head_dim)
    return q, jax.random.normal(kk, kv_shape, dtype), jax.random.normal(kv, kv_shape, dtype)


def _forward_and_grad(op: Callable, mask_kwargs: dict):
    def forward(q, k, v):
        return op(q, k, v, **mask_kwargs)

    def loss(q, k, v):
        return jnp.sum(forward(q, k, v).astype(jnp.float32))

    return forward, jax.grad(loss, argnums=(0, 1, 2))


def _compile(fn: Callable, args):
    """fn compiled for args, or None when compiling runs out of device memory (a GPU compiler
    autotunes on the device, before any budget check can refuse the case)."""
    try:
        return jax.jit(fn).lower(*args).compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return None


def measure_cost(
    kind: str,
    op: Callable,
    shape: Shape,
    n: int,
    *,
    warmup: int = 1,
    repeats: int = 5,
    memory_budget_bytes: int = 12 * 2**30,
    backward: bool = True,
    flops_op: Callable | None = None,
    implementation: str = "xla",
) -> Cost:
    """Measures `op` (contract signature) at sequence length n; skips runs over the budget.

    FLOPs are counted from the jaxpr of `flops_op` (default `op`): a vendor kernel is opaque
    to the count, so its FLOPs are those of the same kind in XLA, which skips the same blocks.
    """
    args = make_inputs(shape, n)
    forward, grad = _forward_and_grad(op, shape.mask_kwargs())
    counted_forward, counted_grad = _forward_and_grad(flops_op or op, shape.mask_kwargs())
    fwd = _compile(forward, args)
    if fwd is None:
        nan = math.nan
        note = "not compiled: out of device memory"
        return Cost(kind, n, nan, nan, nan, nan, nan, nan, nan, note, implementation)
    fwd_bytes = peak_bytes(fwd)
    fwd_flops = flops_lib.count_flops(counted_forward, *args)
    xla_flops = fwd.cost_analysis().get("flops", math.nan)
    bwd_bytes = bwd_flops = math.nan
    notes = []
    if backward:
        bwd = _compile(grad, args)
        if bwd is None:
            backward = False
            notes.append("backward not compiled: out of device memory")
        else:
            bwd_bytes = peak_bytes(bwd)
            bwd_flops = flops_lib.count_flops(counted_grad, *args)  # it re-runs forward
    fwd_s = bwd_s = math.nan
    if not fwd_bytes > memory_budget_bytes:  # NaN (unknown) runs
        fwd_s = median_seconds(fwd, *args, warmup=warmup, repeats=repeats)
    else:
        notes.append(f"forward not run: needs {fwd_bytes / 2**30:.1f} GiB")
    if backward and not bwd_bytes > memory_budget_bytes:
        bwd_s = median_seconds(bwd, *args, warmup=warmup, repeats=repeats)
    elif backward:
        notes.append(f"backward not run: needs {bwd_bytes / 2**30:.1f} GiB")
    return Cost(
        kind,
        n,
        fwd_s,
        bwd_s,
        fwd_bytes,
        bwd_bytes,
        fwd_flops,
        bwd_flops,
        xla_flops,
        "; ".join(notes),
        implementation,
    )


def matmul_gflops_per_s(size: int = 2048, dtype: str = "float32", repeats: int = 10) -> float:
    """This machine's peak matmul throughput (best of `repeats`): the roofline for attention."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
    matmul = jax.jit(lambda x: x @ x)
    best = min(median_seconds(matmul, a, warmup=int(i == 0), repeats=1) for i in range(repeats))
    return 2 * size**3 / best / 1e9
