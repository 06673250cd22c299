"""MoE layers' cost: time per forward+backward, and forward FLOPs for routed attention.

`measure_moe`: a dense FFN with hidden F against E experts of hidden F / k with top-k routing:
each token meets the same number of expert weights, so any extra time is routing and dispatch
overhead. `measure_switchhead`: SwitchHead attention with few and many experts at the same
top-k, beside multi-head attention: a routed layer's cost should follow k, not E.
"""

import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.bench import flops
from attention_jax.layers import attention, feedforward, moe, moe_attention


@dataclasses.dataclass(frozen=True)
class MoETiming:
    layer: str
    tokens: int
    milliseconds: float  # median forward + backward
    ratio_to_dense: float


def _step_seconds(layer, x, repeats: int, **call) -> float:
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    @jax.jit
    def loss_and_grads(params, rest, x):
        def loss(params):
            return jnp.mean(nnx.merge(graphdef, params, rest, copy=True)(x, **call) ** 2)

        return jax.value_and_grad(loss)(params)

    jax.block_until_ready(loss_and_grads(params, rest, x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(loss_and_grads(params, rest, x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_moe(
    *,
    tokens: int = 4096,
    d_model: int = 512,
    hidden: int = 2048,
    num_experts: int = 8,
    top_k: int = 2,
    capacity_factor: float = 1.25,
    repeats: int = 5,
) -> list[MoETiming]:
    """Dense FFN, then MoE with einsum and sort dispatch (and expert choice), same active size."""
    x = jax.random.normal(jax.random.key(0), (1, tokens, d_model))
    rngs = nnx.Rngs(0)
    dense = _step_seconds(
        feedforward.FeedForward(d_model, hidden, use_bias=False, rngs=rngs), x, repeats
    )
    rows = [MoETiming("dense FFN", tokens, 1e3 * dense, 1.0)]
    expert_hidden = hidden // top_k
    variants = [
        (f"MoE {num_experts}x top-{top_k}, einsum", dict(router="top_k", dispatch="einsum")),
        (
            f"MoE {num_experts}x top-{top_k}, sort (grouped matmul)",
            dict(router="top_k", dispatch="sort"),
        ),
        (
            f"MoE {num_experts}x expert choice, einsum",
            dict(router="expert_choice", dispatch="einsum", top_k=1),
        ),
    ]
    for name, options in variants:
        options = {"top_k": top_k, **options}
        # Expert choice: each token meets capacity_factor * top_k experts on average.
        factor = (
            capacity_factor * top_k if options["router"] == "expert_choice" else capacity_factor
        )
        layer = moe.MoEFeedForward(
            d_model,
            expert_hidden,
            num_experts=num_experts,
            capacity_factor=factor,
            rngs=rngs,
            **options,
        )
        seconds = _step_seconds(layer, x, repeats)
        rows.append(MoETiming(name, tokens, 1e3 * seconds, seconds / dense))
    return rows


@dataclasses.dataclass(frozen=True)
class RoutedAttentionCost:
    layer: str
    tokens: int
    milliseconds: float  # median forward + backward
    forward_gflops: float  # counted from the jaxpr
    time_ratio: float  # to the first routed layer (fewest experts)
    flops_ratio: float


def measure_switchhead(
    *,
    tokens: int = 2048,
    d_model: int = 512,
    num_heads: int = 8,
    experts: tuple[int, ...] = (4, 16),
    top_k: int = 2,
    repeats: int = 5,
) -> list[RoutedAttentionCost]:
    """Causal SwitchHead with each number of experts at top-k, then multi-head attention."""
    x = jax.random.normal(jax.random.key(0), (1, tokens, d_model))
    layers = [
        (
            f"SwitchHead {e} experts, top-{top_k}",
            moe_attention.MoEAttention(
                d_model, num_heads, num_experts=e, top_k=top_k, rngs=nnx.Rngs(0)
            ),
        )
        for e in experts
    ]
    layers.append(
        (
            "MultiHeadAttention",
            attention.MultiHeadAttention(d_model, num_heads, use_bias=False, rngs=nnx.Rngs(0)),
        )
    )
    rows = []
    for name, layer in layers:
        seconds = _step_seconds(layer, x, repeats, is_causal=True)
        count = flops.count_flops(functools.partial(layer, is_causal=True), x)
        first = rows[0] if rows else None
        rows.append(
            RoutedAttentionCost(
                name,
                tokens,
                1e3 * seconds,
                count / 1e9,
                seconds * 1e3 / first.milliseconds if first else 1.0,
                count / 1e9 / first.forward_gflops if first else 1.0,
            )
        )
    return rows


def switchhead_markdown(rows: list[RoutedAttentionCost]) -> str:
    lines = [
        "| Layer | Tokens | Forward + backward (ms) | Forward GFLOP | Time / first | "
        "FLOPs / first |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.layer} | {r.tokens} | {r.milliseconds:.1f} | {r.forward_gflops:.2f} | "
        f"{r.time_ratio:.2f} | {r.flops_ratio:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def markdown(rows: list[MoETiming]) -> str:
    lines = ["| Layer | Tokens | Forward + backward (ms) | Time / dense |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r.layer} | {r.tokens} | {r.milliseconds:.1f} | {r.ratio_to_dense:.2f} |" for r in rows
    ]
    return "\n".join(lines) + "\n"
