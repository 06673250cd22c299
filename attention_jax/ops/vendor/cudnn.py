"""`implementation='cudnn'`: NVIDIA's fused flash attention through `jax.nn.dot_product_attention`.

cuDNN skips what causal masking and a left sliding window hide, so it serves `dense`, `flash` and
causal `local`. It has no block layout (a mask would compute every block) and no segment ids or
soft cap. `cudnn_arguments` is the whole translation of our call into jax.nn's, a pure function
tested on CPU; the numerics are checked on a GPU by `experiments/scripts/accelerator_check.sh`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attention_jax.ops import contract


def cudnn_arguments(*, is_causal: bool, window: tuple[int, int] | None) -> dict:
    """jax.nn.dot_product_attention's is_causal and local_window_size for our call.

    cuDNN's sliding window is causal: key j is seen from i - left .. i. Our (left, 0) window is
    that window whether or not the call is causal (j <= i either way, top-left aligned as in
    jax.nn), and a causal call cuts any right window to 0. A right window > 0 without causal
    cannot be expressed; `dispatch` refuses it before this is called.
    """
    if window is None:
        return {"is_causal": bool(is_causal), "local_window_size": None}
    left, right = window
    if right and not is_causal:
        raise ValueError(
            f"cudnn: a right window ({right}) needs is_causal=True; cuDNN's window looks back only."
        )
    return {"is_causal": True, "local_window_size": (left, 0)}


def cudnn_attention(query, key, value, bias, *, scale, is_causal, window, q_lengths, kv_lengths):
    """Runs cuDNN flash attention. Arguments are the op contract's, already checked.

    Args:
      query: [B, T, N, H] in float16 or bfloat16; key, value: [B, S, K, H].
      bias: float broadcastable to [B, N, T, S], or None.
      scale: a Python float.
      is_causal, window: as in `cudnn_arguments`.
      q_lengths, kv_lengths: int [B] or None.

    Returns:
      [B, T, N, H]; rows past the query length, and every row of an example with no keys, are 0.
    """
    out = jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias,
        scale=float(scale),
        query_seq_lengths=None if q_lengths is None else q_lengths.astype(jnp.int32),
        key_value_seq_lengths=None if kv_lengths is None else kv_lengths.astype(jnp.int32),
        implementation="cudnn",
        **cudnn_arguments(is_causal=is_causal, window=window),
    )
    return contract.zero_rows_without_keys(out, q_lengths, kv_lengths)
