"""`implementation='tokamax'`: openxla/tokamax's attention (Mosaic GPU, Triton), where it installs.

An optional extra (`pip install 'attention_jax[tokamax]'`: Python >= 3.12, jax >= 0.11),
imported only when asked for; never a core dependency.
"""

from __future__ import annotations

import importlib.util

INSTALL = "pip install 'attention_jax[tokamax]' (it needs Python >= 3.12 and jax >= 0.11)"


def installed() -> bool:
    return importlib.util.find_spec("tokamax") is not None


def tokamax_attention(
    query, key, value, bias, mask, *, scale, is_causal, window, q_lengths, kv_lengths, soft_cap
):
    """Runs tokamax.dot_product_attention with its own choice of kernel.

    Args are the op contract's, already checked (bias is never given with soft_cap: tokamax caps
    after the bias, we cap before it). Returns [B, T, N, Hv].
    """
    import tokamax

    return tokamax.dot_product_attention(
        query,
        key,
        value,
        bias,
        mask,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=q_lengths,
        key_value_seq_lengths=kv_lengths,
        local_window_size=window,
        logits_soft_cap=soft_cap,
    )
