"""MoE-routed attention, SwitchHead style (Csordás et al. 2023, "SwitchHead: Accelerating
Transformers with Mixture-of-Experts Attention").

Queries and keys are ordinary projections; each head's value and output projections are chosen
per token from E experts. A token's value for head n is the gated sum of its top-k value
experts (sigmoid gates, routed on the source token); the head's output goes through the top-k
output experts routed on the destination token. The attention itself is any registered kind,
so routed heads compose with sparse and kernelized attention alike.

Only the chosen experts are computed: each (token, head, choice) is one row of a grouped
matmul (`grouped_matmul`), so the projection cost follows k, not E (forward FLOPs at E = 16 are
within a few percent of E = 4 at the same k; the routers, D x N x E per token, are what grows).
With E = k = 1 it is multi-head attention with sigmoid-gated value and output projections.
Models use it in place of `MultiHeadAttention` through their config's `moe_attention` field.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import ops
from attention_jax.layers import arguments, positional
from attention_jax.ops.grouped_matmul import grouped_matmul

NAME = "MoEAttention"
# Kinds whose op takes learned or random arrays owned by `MultiHeadAttention` (Linformer's
# projections, Performer's features) or gates it computes (the state-carrying kinds); routing
# them would need that state per expert.
_ARRAYS_A_LAYER_OWNS = (ops.OwnedState.RANDOM_FEATURES, ops.OwnedState.LEARNED_PROJECTIONS)


def routable(kind: str) -> bool:
    """Whether MoEAttention can route `kind` (its op needs no arrays a layer owns)."""
    record = ops.kind(kind)
    return record.owned_state not in _ARRAYS_A_LAYER_OWNS and record.gates is None


_NO_CACHE = (
    "MoEAttention keeps no decoding cache; decode with a model whose attention is not routed "
    "(moe_attention={}), or run the full sequence each step."
)


def top_k_choices(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k largest of logits [..., E]: their sigmoid gates [..., k] (float32) and expert
    indices [..., k] (ties: the lower index)."""
    values, chosen = jax.lax.top_k(logits.astype(jnp.float32), k)
    return jax.nn.sigmoid(values), chosen


def top_k_gates(logits: jax.Array, k: int) -> jax.Array:
    """Sigmoid gates [..., E] with all but the k largest set to zero (ties: lower index)."""
    gates, chosen = top_k_choices(logits, k)
    return jnp.sum(
        jax.nn.one_hot(chosen, logits.shape[-1], dtype=gates.dtype) * gates[..., None], -2
    )


def routed_projection(x_BLNF, weights_NEFG, logits_BLNE, k: int) -> jax.Array:
    """sum_j gate_j * x[b, l, n] @ weights[n, expert_j] over each (b, l, n)'s top-k experts,
    computing only those: [B, L, N, F] -> [B, L, N, G] (F features in, G out).

    x may broadcast over heads (N = 1 for a token's input shared by every head).
    """
    B, L, N, E = logits_BLNE.shape
    _, _, F, G = weights_NEFG.shape
    gates_BLNk, chosen_BLNk = top_k_choices(logits_BLNE, k)
    # One row per (token, head, choice), grouped by (head, expert).
    rows = jnp.broadcast_to(x_BLNF[:, :, :, None, :], (B, L, N, k, F)).reshape(-1, F)
    group = (chosen_BLNk + E * jnp.arange(N)[:, None]).reshape(-1)
    y = grouped_matmul(rows, group, weights_NEFG.reshape(N * E, F, G))
    y = y.reshape(B, L, N, k, G) * gates_BLNk[..., None].astype(y.dtype)
    return y.sum(axis=3)


class MoEAttention(nnx.Module):
    """SwitchHead attention over [B, T, D] (self) or [B, T, D] x [B, S, D] (cross).

    Args:
      in_features: D.
      num_heads: N.
      num_experts: E value and output experts per head.
      top_k: experts each token uses per head.
      head_dim: H (default D / N).
      kind, kind_params: the attention kind from `ops.names()` and its parameters.
      positions: None or 'rope' (rotates queries and keys).
      dtype: computation dtype (e.g. bfloat16); parameters stay `param_dtype`.
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
        kind: str = ops.DEFAULT_KIND,
        kind_params: dict | None = None,
        positions: str | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = arguments.positive_int(NAME, "in_features", in_features)
        num_heads = arguments.positive_int(NAME, "num_heads", num_heads)
        num_experts = arguments.positive_int(NAME, "num_experts", num_experts)
        top_k = arguments.positive_int(NAME, "top_k", top_k)
        head_dim = in_features // num_heads if head_dim is None else head_dim
        head_dim = arguments.positive_int(NAME, "head_dim", head_dim)
        if top_k > num_experts:
            raise ValueError(
                f"MoEAttention: need 1 <= top_k <= num_experts; got {top_k}, {num_experts}."
            )
        if not routable(kind):
            raise ValueError(
                f"MoEAttention: kind {kind!r} needs per-layer projections that only "
                f"MultiHeadAttention owns; route a kind from "
                f"{[name for name in ops.names() if routable(name)]}."
            )
        if positions not in (None, "rope"):
            raise ValueError(f"MoEAttention: positions must be None or 'rope'; got {positions!r}.")
        self.positions = positions
        self.dtype = dtype
        self.attention_fn = ops.get(kind)
        self.kind_params = dict(kind_params or {})
        self.top_k = top_k
        D, N, E, H = in_features, num_heads, num_experts, head_dim

        # Fan-in is what one output sums over: D for every input projection, N*H for the
        # output. Heads and experts are batch axes (a token's experts are alternatives), so
        # the scale matches MultiHeadAttention's; counting them as fan-in would shrink the
        # logits and values by sqrt(N) and sqrt(N*E) and slow learning.
        def lecun(in_axis, out_axis, batch_axis):
            return nnx.initializers.lecun_normal(in_axis, out_axis, batch_axis)

        keys = iter(jax.random.split(rngs.params(), 6))
        self.query = nnx.Param(lecun(0, 2, 1)(next(keys), (D, N, H), param_dtype))
        self.key = nnx.Param(lecun(0, 2, 1)(next(keys), (D, N, H), param_dtype))
        self.value_experts = nnx.Param(lecun(0, 3, (1, 2))(next(keys), (D, N, E, H), param_dtype))
        self.out_experts = nnx.Param(lecun((0, 2), 3, 1)(next(keys), (N, E, H, D), param_dtype))
        self.value_router = nnx.Param(lecun(0, 2, 1)(next(keys), (D, N, E), param_dtype))
        self.out_router = nnx.Param(lecun(0, 2, 1)(next(keys), (D, N, E), param_dtype))

    def init_cache(self, batch: int, max_len: int, dtype=None) -> None:
        """Refused: routed attention keeps no decoding cache."""
        raise ValueError(_NO_CACHE)

    def _weight(self, name: str) -> jax.Array:
        w = getattr(self, name)[...]
        return w if self.dtype is None else w.astype(self.dtype)

    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        *,
        query_positions: jax.Array | None = None,
        key_positions: jax.Array | None = None,
        deterministic: bool | None = None,
        decode: bool = False,
        **attention_kwargs,
    ):
        """[B, T, D] -> [B, T, D], called like `MultiHeadAttention`.

        Args:
          query_positions, key_positions: int [B, T] / [B, S] for RoPE; default 0..T-1, 0..S-1.
          deterministic: accepted for the blocks' calling convention; the layer has no dropout.
          decode: must be False: routed attention keeps no decoding cache.
          attention_kwargs: mask, is_causal and sequence lengths, as in the op contract.
        """
        del deterministic
        if decode:
            raise ValueError(_NO_CACHE)
        source = x if context is None else context
        q_BTNH = jnp.einsum("btd,dnh->btnh", x, self._weight("query"))
        k_BSNH = jnp.einsum("bsd,dnh->bsnh", source, self._weight("key"))
        if self.positions == "rope":
            T, S = q_BTNH.shape[1], k_BSNH.shape[1]
            q_pos = jnp.arange(T) if query_positions is None else query_positions
            k_pos = jnp.arange(S) if key_positions is None else key_positions
            q_BTNH = positional.apply_rope(q_BTNH, q_pos)
            k_BSNH = positional.apply_rope(k_BSNH, k_pos)
        v_BSNH = routed_projection(
            source[:, :, None, :],
            self._weight("value_experts").transpose(1, 2, 0, 3),  # [N, E, D, H]
            jnp.einsum("bsd,dne->bsne", source, self._weight("value_router")),
            self.top_k,
        ).astype(q_BTNH.dtype)
        o_BTNH = self.attention_fn(q_BTNH, k_BSNH, v_BSNH, **self.kind_params, **attention_kwargs)
        out_BTND = routed_projection(
            o_BTNH,
            self._weight("out_experts"),  # [N, E, H, D]
            jnp.einsum("btd,dne->btne", x, self._weight("out_router")),
            self.top_k,
        )
        return out_BTND.sum(axis=2).astype(x.dtype)
