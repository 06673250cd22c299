"""MoE-routed attention, SwitchHead style (Csordás et al. 2023, "SwitchHead: Accelerating
Transformers with Mixture-of-Experts Attention").

Queries and keys are ordinary projections; each head's value and output projections are chosen
per token from E experts. A token's value for head n is the gated sum of its top-k value
experts (sigmoid gates, routed on the source token); the head's output goes through the top-k
output experts routed on the destination token. The attention itself is any registered kind,
so routed heads compose with sparse and kernelized attention alike.

This layer evaluates all E expert projections and keeps the top k (simple and exact; the
projection cost grows with E, the attention cost does not). With E = k = 1 it is multi-head
attention with sigmoid-gated value and output projections.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import ops


def top_k_gates(logits: jax.Array, k: int) -> jax.Array:
    """Sigmoid gates [..., E] with all but the k largest set to zero (ties: lower index)."""
    gates = jax.nn.sigmoid(logits.astype(jnp.float32))
    chosen = jax.lax.top_k(logits.astype(jnp.float32), k)[1]
    keep = jnp.sum(jax.nn.one_hot(chosen, gates.shape[-1], dtype=gates.dtype), axis=-2)
    return gates * keep


class MoEAttention(nnx.Module):
    """SwitchHead attention over [B, T, D] (self) or [B, T, D] x [B, S, D] (cross).

    Args:
      in_features: D.
      num_heads: N.
      num_experts: E value and output experts per head.
      top_k: experts each token uses per head.
      head_dim: H (default D / N).
      kind, kind_params: the attention kind from `ops.names()` and its parameters.
      rngs: parameter randomness.
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int,
        *,
        num_experts: int,
        top_k: int = 2,
        head_dim: int | None = None,
        kind: str = "dense",
        kind_params: dict | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not 1 <= top_k <= num_experts:
            raise ValueError(
                f"MoEAttention: need 1 <= top_k <= num_experts; got {top_k}, {num_experts}."
            )
        head_dim = head_dim or in_features // num_heads
        self.attention_fn = ops.get(kind)
        self.kind_params = dict(kind_params or {})
        self.top_k = top_k
        D, N, E, H = in_features, num_heads, num_experts, head_dim
        init = nnx.initializers.lecun_normal()
        keys = iter(jax.random.split(rngs.params(), 6))
        self.query = nnx.Param(init(next(keys), (D, N, H), param_dtype))
        self.key = nnx.Param(init(next(keys), (D, N, H), param_dtype))
        self.value = nnx.Param(init(next(keys), (D, N, E, H), param_dtype))
        self.out = nnx.Param(
            nnx.initializers.lecun_normal(in_axis=(0, 2), out_axis=3)(
                next(keys), (N, E, H, D), param_dtype
            )
        )
        self.value_router = nnx.Param(init(next(keys), (D, N, E), param_dtype))
        self.out_router = nnx.Param(init(next(keys), (D, N, E), param_dtype))

    def __call__(self, x: jax.Array, context: jax.Array | None = None, **attention_kwargs):
        """[B, T, D] -> [B, T, D]; attention_kwargs (mask, is_causal, lengths) go to the op."""
        source = x if context is None else context
        q_BTNH = jnp.einsum("btd,dnh->btnh", x, self.query[...])
        k_BSNH = jnp.einsum("bsd,dnh->bsnh", source, self.key[...])
        value_gates_BSNE = top_k_gates(
            jnp.einsum("bsd,dne->bsne", source, self.value_router[...]), self.top_k
        )
        v_BSNH = jnp.einsum(
            "bsd,dneh,bsne->bsnh", source, self.value[...], value_gates_BSNE.astype(source.dtype)
        )
        o_BTNH = self.attention_fn(q_BTNH, k_BSNH, v_BSNH, **self.kind_params, **attention_kwargs)
        out_gates_BTNE = top_k_gates(
            jnp.einsum("btd,dne->btne", x, self.out_router[...]), self.top_k
        )
        return jnp.einsum(
            "btnh,nehd,btne->btd", o_BTNH, self.out[...], out_gates_BTNE.astype(x.dtype)
        )
