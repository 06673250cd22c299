"""PyTorch's CPU `scaled_dot_product_attention` as an optional peer in the cost comparison.

Only wall time is measured (XLA's memory analysis does not apply); FLOPs are those of the same
attention computed by the dense kind. Install with `pip install -e ".[torch]"`.
"""

from __future__ import annotations

import math

from attention_jax import ops
from attention_jax.bench import flops as flops_lib
from attention_jax.bench import measure

NAME = "torch.sdpa"


def import_torch():
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"kind {NAME!r} needs PyTorch: pip install -e '.[torch]', or drop it from kinds."
        ) from None
    return torch


def measure_torch(
    shape: measure.Shape,
    n: int,
    *,
    warmup: int = 1,
    repeats: int = 5,
    backward: bool = True,
) -> measure.Cost:
    """Times torch SDPA on [B, N, n, H] tensors (its native heads-major layout)."""
    torch = import_torch()
    if shape.local_window_size is not None:
        raise ValueError(f"{NAME} has no sliding window; drop it from kinds for window runs.")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    dtype = getattr(torch, shape.dtype)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(shape.batch, shape.num_heads, n, shape.head_dim, generator=gen, dtype=dtype)
    kv_shape = (shape.batch, shape.num_kv_heads, n, shape.head_dim)
    k = torch.randn(*kv_shape, generator=gen, dtype=dtype)
    v = torch.randn(*kv_shape, generator=gen, dtype=dtype)
    gqa = shape.num_kv_heads != shape.num_heads

    def forward(q, k, v):
        with torch.no_grad():
            return sdpa(q, k, v, is_causal=shape.is_causal, enable_gqa=gqa)

    def forward_backward(q, k, v):
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
        sdpa(q, k, v, is_causal=shape.is_causal, enable_gqa=gqa).float().sum().backward()
        return q.grad

    def no_sync(x):
        return x  # torch on CPU returns when the work is done

    times = [
        measure.median_seconds(fn, q, k, v, warmup=warmup, repeats=repeats, sync=no_sync)
        for fn in ((forward, forward_backward) if backward else (forward,))
    ]
    fwd_flops = flops_lib.count_flops(
        lambda *a: ops.dense(*a, **shape.mask_kwargs()), *measure.make_inputs(shape, n)
    )
    return measure.Cost(
        NAME,
        n,
        times[0],
        times[1] if backward else math.nan,
        math.nan,
        math.nan,
        fwd_flops,
        math.nan,
        math.nan,
        "torch: time only",
        "torch",
    )
