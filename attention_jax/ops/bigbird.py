"""BigBird attention (Zaheer et al. 2020): window, global and random blocks on the block engine.

Query block i computes key blocks i - w//2 .. i + w//2 (window), the first `num_global_blocks`
blocks (global: those tokens also attend to everything), and `num_random_blocks` others drawn at
random. The random draw is NumPy's, from the explicit `seed`, at trace time: the layout decides
which blocks are computed, so it must be static, and the same seed always gives the same layout.
"""

from __future__ import annotations

import jax
import numpy as np

from attention_jax.ops import contract
from attention_jax.ops.flash import blocked_attention
from attention_jax.ops.sparse import DEFAULT_SPARSE_BLOCK, block_sparse_pattern
from attention_jax.ops.vendor import dispatch


def _count(name: str, value, minimum: int) -> int:
    return contract.static_int("bigbird", name, value, minimum)


def _rng(seed) -> np.random.Generator:
    """A NumPy generator from an int seed or a concrete JAX PRNG key."""
    if isinstance(seed, jax.core.Tracer):
        raise ValueError("bigbird: seed must be concrete (an int or a key made outside jit).")
    if isinstance(seed, jax.Array):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            seed = jax.random.key_data(seed)
        return np.random.default_rng(np.asarray(seed, np.uint32).ravel().tolist())
    return np.random.default_rng(_count("seed", seed, 0))


def bigbird_layout(
    num_q_blocks: int,
    num_kv_blocks: int,
    *,
    num_window_blocks: int = 3,
    num_global_blocks: int = 2,
    num_random_blocks: int = 3,
    seed=0,
    num_heads: int | None = None,
    is_causal: bool = False,
) -> np.ndarray:
    """Bool [num_q_blocks, num_kv_blocks] (or [num_heads, ...], one random draw per head).

    Random blocks are drawn per query block, without replacement, among the blocks the window and
    global blocks leave out (and, with `is_causal`, only from earlier blocks, so none is wasted).
    Global query blocks already see everything and draw none.
    """
    window = _count("num_window_blocks", num_window_blocks, 1)
    if window % 2 == 0:
        raise ValueError(
            f"bigbird: num_window_blocks must be odd (the block plus equal neighbours on each "
            f"side); got {window}."
        )
    num_global = _count("num_global_blocks", num_global_blocks, 0)
    num_random = _count("num_random_blocks", num_random_blocks, 0)
    rng = _rng(seed)
    q_block = np.arange(num_q_blocks)[:, None]
    kv_block = np.arange(num_kv_blocks)[None, :]
    fixed = (np.abs(q_block - kv_block) <= window // 2) | (kv_block < num_global)
    fixed |= q_block < num_global
    heads = []
    for _ in range(num_heads or 1):
        layout = fixed.copy()
        for i in range(num_global, num_q_blocks):
            candidates = np.flatnonzero(~fixed[i] & ((kv_block[0] <= i) | (not is_causal)))
            take = min(num_random, candidates.size)
            layout[i, rng.choice(candidates, size=take, replace=False)] = True
        heads.append(layout)
    return np.stack(heads) if num_heads else heads[0]


def _token_layout(q_len: int, kv_len: int, block_size, num_heads, **layout_params):
    """(block_size, layout) of the bigbird blocks over q_len x kv_len tokens."""
    block_size = _count("block_size", block_size, 1)
    layout = bigbird_layout(
        -(-q_len // block_size), -(-kv_len // block_size), num_heads=num_heads, **layout_params
    )
    return block_size, layout


def bigbird(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    block_size: int = DEFAULT_SPARSE_BLOCK,
    num_window_blocks: int = 3,
    num_global_blocks: int = 2,
    num_random_blocks: int = 3,
    seed=0,
    per_head: bool = False,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    query_segment_ids: jax.Array | None = None,
    key_value_segment_ids: jax.Array | None = None,
    logits_soft_cap: float | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """BigBird block-sparse attention; cost O(T * block_size * (window + global + random)).

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv].
      bias, mask, scale, is_causal, query_seq_lengths, key_value_seq_lengths, local_window_size,
        query_segment_ids, key_value_segment_ids, logits_soft_cap: as in `flash`, applied within
        the layout.
      block_size: tokens per block side; T and S need not be multiples (padding is internal).
      num_window_blocks: odd; the query block and its neighbours.
      num_global_blocks: the first blocks, attending to and attended by all.
      num_random_blocks: random key blocks per query block.
      seed: int or concrete PRNG key for the random blocks (static: it picks the computed blocks).
      per_head: draw the random blocks separately for each head (as in the paper) instead of
        sharing one layout.
      implementation: 'xla' (our blocked engine) or 'pallas_tpu' (splash attention over the
        same blocks); None picks the fastest here (`ops.explain` says which).

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    arguments = contract.forwarded(locals())
    block_size, layout = _token_layout(
        query.shape[1],
        key.shape[1],
        block_size,
        query.shape[2] if per_head else None,
        num_window_blocks=num_window_blocks,
        num_global_blocks=num_global_blocks,
        num_random_blocks=num_random_blocks,
        seed=seed,
        is_causal=is_causal,
    )
    out = dispatch.attend(
        "bigbird",
        implementation,
        query,
        key,
        value,
        bias,
        mask,
        arguments,
        layout=layout,
        block=block_size,
    )
    if out is not None:
        return out
    return blocked_attention(
        "bigbird",
        query,
        key,
        value,
        block_q=block_size,
        block_kv=block_size,
        layout=layout,
        **arguments,
    )


def bigbird_pattern(
    q_len: int,
    kv_len: int,
    *,
    block_size: int = DEFAULT_SPARSE_BLOCK,
    num_window_blocks: int = 3,
    num_global_blocks: int = 2,
    num_random_blocks: int = 3,
    seed=0,
    per_head: bool = False,
    num_heads: int | None = None,
    is_causal: bool = False,
):
    """The token pairs of the bigbird layout; [num_heads, T, S] with `per_head`.

    The random draw depends on `is_causal` (causal layouts draw only earlier blocks), so pass the
    op's `is_causal` here too; the causal mask itself still comes on top.
    """
    if per_head and num_heads is None:
        raise ValueError("pattern_mask('bigbird', per_head=True) needs num_heads.")
    block_size, layout = _token_layout(
        q_len,
        kv_len,
        block_size,
        num_heads if per_head else None,
        num_window_blocks=num_window_blocks,
        num_global_blocks=num_global_blocks,
        num_random_blocks=num_random_blocks,
        seed=seed,
        is_causal=is_causal,
    )
    return block_sparse_pattern(q_len, kv_len, layout=layout, block_size=block_size)
