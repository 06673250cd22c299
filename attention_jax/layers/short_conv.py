"""A short causal depthwise convolution over time, as Mamba, Based and Gated DeltaNet put on
their q, k and v: each channel mixes its last `width` positions, then a SiLU.

It gives a linear-time kind a cheap look at the previous few tokens, which recall tasks need
(an induction head is "the token after the one that matched"). Decoding keeps the last
width - 1 inputs per sequence, so it stays O(1) per token.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class ShortConvolution(nnx.Module):
    """x [B, T, C] -> silu(causal depthwise conv of x) [B, T, C], kernel [width, C], no bias.

    Args:
      channels: C.
      width: positions each output sees, itself included (4 in Mamba and Gated DeltaNet).
    """

    def __init__(self, channels: int, width: int, *, dtype=None, param_dtype=jnp.float32, rngs):
        self.width, self.dtype = width, dtype
        # PyTorch's Conv1d default for a depthwise kernel (fan-in = width), as the papers use.
        bound = 1.0 / math.sqrt(width)
        kernel = jax.random.uniform(rngs.params(), (width, channels), param_dtype, -bound, bound)
        self.kernel = nnx.Param(kernel)
        self.tail = nnx.data(None)  # the last width - 1 inputs, set by init_cache

    def init_cache(self, batch: int, dtype) -> None:
        """Empties the decoding state: no inputs seen yet (zeros, as the causal padding)."""
        channels = self.kernel.shape[1]
        self.tail = nnx.Cache(jnp.zeros((batch, self.width - 1, channels), dtype))

    def __call__(self, x: jax.Array, *, decode: bool = False) -> jax.Array:
        """x [B, T, C] -> [B, T, C]; with decode, x follows the inputs in the decoding state."""
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        T = x.shape[1]
        if decode:
            if self.tail is None:
                raise ValueError(
                    "ShortConvolution: decode=True needs a decoding state: call init_cache "
                    "(an attention layer's init_cache(batch, max_len) sets it)."
                )
            padded = jnp.concatenate([self.tail.get_value().astype(dtype), x], axis=1)
            self.tail.set_value(padded[:, padded.shape[1] - (self.width - 1) :])
        else:
            padded = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0)))
        kernel = self.kernel[...].astype(dtype)
        # out_t = sum_i kernel[i] * x_{t - (width - 1) + i}: width shifted slices, no [T, T].
        out = sum(padded[:, i : i + T] * kernel[i] for i in range(self.width))
        return jax.nn.silu(out)
