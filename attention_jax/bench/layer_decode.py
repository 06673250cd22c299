"""Per-token cost of the attention layer's decoding state, by kind, as the cache grows.

A full KV cache (dense, flash, the sparse kinds) holds every past key and is read whole at each
step; `local`'s ring buffer holds only its window; a kernelized or state-carrying kind holds a
fixed-size state; MoBA holds every key but reads only its chosen blocks.
Each step is timed at the last position of a cache of the given length, on the real layer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import ops
from attention_jax.bench.measure import median_seconds
from attention_jax.layers import MultiHeadAttention, decoding
from attention_jax.layers.attention import MAX_PATTERN_DECODE_LEN


@dataclasses.dataclass(frozen=True)
class LayerDecodeCost:
    """One decoding step of `kind` with `cache_len` tokens of context."""

    kind: str
    cache_len: int
    step_s: float
    state_bytes: int


def _filled(state, position: int):
    """The decoding state as if `position` tokens had been decoded (contents are irrelevant)."""
    if isinstance(state, (ops.LinearState, ops.DecayState, ops.DeltaState, ops.MoBACache)):
        return dataclasses.replace(state, position=jnp.full_like(state.position, position))
    size = state.slot_positions.shape[0]
    slots = jnp.arange(size)
    if size >= position:  # a full cache: slot i holds position i
        slot_positions = jnp.where(slots < position, slots, -1)
    else:  # a ring: the last `size` positions, each in slot p % size
        newest = position - 1
        slot_positions = newest - (newest - slots) % size
    return dataclasses.replace(state, slot_positions=slot_positions, index=jnp.int32(position))


def _pure_step(graphdef):
    """A jitted step that leaves the state as it was, so every repeat decodes the same token."""
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, decode=True))


def measure_layer_decode(
    kinds,
    cache_lens,
    *,
    d_model: int = 512,
    num_heads: int = 8,
    batch: int = 1,
    kind_params: dict | None = None,
    warmup: int = 2,
    repeats: int = 20,
) -> list[LayerDecodeCost]:
    """Times one jitted decoding step of each kind at the end of caches of each length.

    Args:
      kinds: kinds that can decode (`layers.decoding.strategies()`).
      cache_lens: cache lengths (`init_cache`'s max_len); the step decodes the last token.
      d_model, num_heads, batch: the layer's size (head_dim = d_model // num_heads).
      kind_params: optional {kind: kind_params} for the layers.
      warmup, repeats: timing calls before and in the median.
    """
    rows = []
    x = jax.random.normal(jax.random.key(0), (batch, 1, d_model))
    for kind in kinds:
        decoding.strategy(kind)  # a ValueError naming a kind that cannot decode
        for cache_len in cache_lens:
            if decoding.uses_pattern(kind) and cache_len > MAX_PATTERN_DECODE_LEN:
                continue  # the pattern would not fit; the table shows a dash
            layer = MultiHeadAttention(
                d_model,
                num_heads,
                kind=kind,
                kind_params=(kind_params or {}).get(kind),
                max_len=cache_len,
                rngs=nnx.Rngs(0),
            )
            layer.init_cache(batch, cache_len)
            layer.cache.set_value(_filled(layer.cache.get_value(), cache_len - 1))
            graphdef, state = nnx.split(layer)
            step = _pure_step(graphdef)
            state_bytes = sum(a.nbytes for a in jax.tree.leaves(layer.cache.get_value()))
            seconds = median_seconds(step, state, x, warmup=warmup, repeats=repeats)
            rows.append(LayerDecodeCost(kind, cache_len, seconds, state_bytes))
    return rows


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def markdown(rows: list[LayerDecodeCost]) -> str:
    """Step time (µs) and state size per kind (rows) and cache length (columns)."""
    lens = sorted({r.cache_len for r in rows})
    kinds = list(dict.fromkeys(r.kind for r in rows))
    cell = {(r.kind, r.cache_len): r for r in rows}
    header = " | ".join(f"{n:,} tokens: µs / state" for n in lens)
    lines = [f"| kind | {header} |", "|---|" + "---:|" * len(lens)]
    for kind in kinds:
        cells = []
        for n in lens:
            r = cell.get((kind, n))
            cells.append("—" if r is None else f"{r.step_s * 1e6:.0f} / {_bytes(r.state_bytes)}")
        lines.append(f"| `{kind}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
