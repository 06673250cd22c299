"""Position-wise feed-forward network: D -> F -> D with GELU, ReLU or SwiGLU.

SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer") multiplies an up projection by a
SiLU-gated projection: down(silu(gate(x)) * up(x)). With `lora_rank`, every projection is an
`nnx.LoRALinear`: the frozen-able base kernel plus a low-rank update (Hu et al. 2021).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.layers import arguments

# Exact (erf) GELU, as in BERT and ViT; SwiGLU's nonlinearity is the SiLU on its gate.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "swiglu": jax.nn.silu,
}
GATED = ("swiglu",)


def _linear(in_features, out_features, *, lora_rank, dtype, param_dtype, use_bias, rngs):
    common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if lora_rank is None:
        return nnx.Linear(in_features, out_features, **common)
    return nnx.LoRALinear(
        in_features,
        out_features,
        lora_rank=lora_rank,
        lora_dtype=dtype,
        lora_param_dtype=param_dtype,
        **common,
    )


class FeedForward(nnx.Module):
    """Feed-forward network over [B, T, D] inputs.

    Args:
      d_model: D, input and output features.
      hidden: F, hidden features (of each of SwiGLU's gate and up projections).
      activation: 'gelu' (exact), 'relu' or 'swiglu'.
      dropout_rate: dropout on the hidden activations, in [0, 1).
      use_bias: biases in the projections.
      lora_rank: adds a rank-r LoRA update to every projection; None for none.
      dtype: computation dtype (e.g. bfloat16); parameters stay `param_dtype`.
      param_dtype: dtype of the parameters.
      rngs: parameter (and dropout) randomness.
    """

    def __init__(
        self,
        d_model: int,
        hidden: int,
        *,
        activation: str = "gelu",
        dropout_rate: float = 0.0,
        use_bias: bool = True,
        lora_rank: int | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"FeedForward: unknown activation {activation!r}; choose one of "
                f"{', '.join(sorted(ACTIVATIONS))}."
            )
        d_model = arguments.positive_int("FeedForward", "d_model", d_model)
        hidden = arguments.positive_int("FeedForward", "hidden", hidden)
        if lora_rank is not None:
            lora_rank = arguments.positive_int("FeedForward", "lora_rank", lora_rank)
        dropout_rate = arguments.dropout_rate("FeedForward", dropout_rate)
        self.activation = activation
        linear = functools.partial(
            _linear,
            lora_rank=lora_rank,
            dtype=dtype,
            param_dtype=param_dtype,
            use_bias=use_bias,
            rngs=rngs,
        )
        self.gate = linear(d_model, hidden) if activation in GATED else None
        self.up = linear(d_model, hidden)
        self.down = linear(hidden, d_model)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """x [B, T, D] -> [B, T, D]; `deterministic` disables dropout."""
        act = ACTIVATIONS[self.activation]
        if self.gate is None:
            h_BTF = act(self.up(x))
        else:
            h_BTF = act(self.gate(x)) * self.up(x)
        return self.down(self.dropout(h_BTF, deterministic=deterministic))
