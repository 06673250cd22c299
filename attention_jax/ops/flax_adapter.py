"""Adapter from any attention kind to the `attention_fn` hook of `flax.nnx.MultiHeadAttention`."""

from __future__ import annotations

from collections.abc import Callable

from attention_jax.ops import registry


def flax_attention_fn(kind: str, **params) -> Callable:
    """Returns an `attention_fn` for `flax.nnx.MultiHeadAttention` that runs `kind`.

    Flax passes a boolean mask [B|1, N|1, T, S] and dropout settings; attention dropout is not
    part of the op contract, so a module configured with it gets a ValueError instead of
    silently dropping nothing.

    Example:
      layer = nnx.MultiHeadAttention(num_heads=8, in_features=512, decode=False, rngs=rngs,
                                     attention_fn=ops.flax_attention_fn('flash', block_q=128))
    """
    op = registry.get(kind)
    # Flax always passes its own is_causal; a causal kind bound here is OR-ed with it.
    bound_causal = params.pop("is_causal", False)

    def attention_fn(
        query,
        key,
        value,
        bias=None,
        mask=None,
        *,
        dropout_rate: float = 0.0,
        deterministic: bool = True,
        is_causal: bool = False,
        dropout_rng=None,
        broadcast_dropout=True,
        dtype=None,
        precision=None,
        module=None,
    ):
        if dropout_rate > 0.0 and not deterministic:
            raise ValueError(
                f"flax_attention_fn({kind!r}): attention dropout (dropout_rate={dropout_rate}) "
                "is not supported; set dropout_rate=0.0 on the MultiHeadAttention module."
            )
        if precision is not None:
            raise ValueError(
                f"flax_attention_fn({kind!r}): matmul precision={precision!r} is not supported; "
                "leave precision unset on the module."
            )
        if module is not None:
            raise ValueError(
                f"flax_attention_fn({kind!r}): sow_weights is not supported; use "
                "ops.dense(..., return_weights=True) to look at attention weights."
            )
        if mask is not None:
            # Flax masks are often float 0/1 (nnx.make_attention_mask); nonzero means attend.
            mask = mask.astype(bool)
        if dtype is not None:
            query, key, value = (x.astype(dtype) for x in (query, key, value))
        return op(query, key, value, bias, mask, is_causal=is_causal or bound_causal, **params)

    return attention_fn
