"""Mixture-of-experts feed-forward layer: a router, E expert FFNs, two equal dispatch paths.

`dispatch='einsum'` moves tokens with the [T, E, C] dispatch tensor (GShard, Switch): simple
and fast for few experts, but the dispatch tensor grows as T * E * C. `dispatch='sort'` sorts
the (token, choice) pairs by expert and runs the experts as a grouped matmul in tiles of one
expert (`ops.grouped_matmul`, token choice) or gathers each expert's chosen tokens (expert
choice): memory linear in T * k, for many experts. Both compute the same function (the tests
check it).
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.layers import arguments, expert_parallel, routing
from attention_jax.layers.feedforward import ACTIVATIONS, GATED
from attention_jax.ops.grouped_matmul import grouped_matmul

DISPATCHES = ("einsum", "sort")


class RoutingStats(nnx.Variable):
    """The router's last statistics and auxiliary losses (a fresh value every call)."""


def _empty_stats(num_experts: int) -> dict:
    zero = jnp.zeros((), jnp.float32)
    return {
        "load_balancing_loss": zero,
        "z_loss": zero,
        "dropped_fraction": zero,
        "expert_load": jnp.zeros((num_experts,), jnp.float32),
    }


class MoEFeedForward(nnx.Module):
    """E expert feed-forward networks over [B, S, D] inputs, each token sent to a few.

    Args:
      d_model: D.
      hidden: F, hidden features of each expert.
      num_experts: E.
      top_k: experts per token (token-choice routing).
      capacity_factor: expert capacity relative to an even split (1.25 is Switch's default);
        None for dropless token choice. For expert choice, tokens per expert = S * factor / E
        for routing groups of S tokens.
      router: 'top_k' (token choice) or 'expert_choice'.
      dispatch: 'einsum' or 'sort'.
      activation: 'gelu', 'relu' or 'swiglu'.
      router_jitter: multiply the router input by U(1 - j, 1 + j) in training (Switch).
      batch_prioritized: fill expert slots most-confident token first.
      group_size: at most this many tokens are routed together (capacity is per group);
        None for all at once.
      mesh, expert_axis: with a mesh whose `expert_axis` has P > 1 devices, the einsum path
        shards experts and token groups over it and moves tokens by all-to-all.
      dtype: computation dtype of the experts; the router runs in float32.
      rngs: parameter and jitter randomness.

    After each call, `self.stats` holds the routing statistics and auxiliary losses of that
    call (`routing.Routing.stats`), which models collect into the training loss.
    """

    def __init__(
        self,
        d_model: int,
        hidden: int,
        *,
        num_experts: int,
        top_k: int = 2,
        capacity_factor: float | None = 1.25,
        router: str = "top_k",
        dispatch: str = "einsum",
        activation: str = "gelu",
        router_jitter: float = 0.0,
        batch_prioritized: bool = False,
        group_size: int | None = 1024,
        mesh=None,
        expert_axis: str = "expert",
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if router not in routing.ROUTERS or dispatch not in DISPATCHES:
            raise ValueError(
                f"MoEFeedForward: router must be one of {routing.ROUTERS} and dispatch one of "
                f"{DISPATCHES}; got {router!r}, {dispatch!r}."
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"MoEFeedForward: unknown activation {activation!r}.")
        d_model = arguments.positive_int("MoEFeedForward", "d_model", d_model)
        hidden = arguments.positive_int("MoEFeedForward", "hidden", hidden)
        num_experts = arguments.positive_int("MoEFeedForward", "num_experts", num_experts)
        top_k = arguments.positive_int("MoEFeedForward", "top_k", top_k)
        if top_k > num_experts:
            raise ValueError(
                f"MoEFeedForward: need num_experts >= 1 and 1 <= top_k <= num_experts; got "
                f"{num_experts}, {top_k}."
            )
        if router == "expert_choice" and capacity_factor is None:
            raise ValueError("MoEFeedForward: expert choice needs a capacity_factor.")
        self.num_experts, self.top_k, self.capacity_factor = num_experts, top_k, capacity_factor
        self.router, self.dispatch, self.activation = router, dispatch, activation
        self.group_size = group_size
        self.mesh, self.expert_axis = mesh, expert_axis
        self.router_jitter, self.batch_prioritized = router_jitter, batch_prioritized
        self.dtype = dtype
        init = nnx.initializers.lecun_normal()
        keys = jax.random.split(rngs.params(), 4)
        self.router_kernel = nnx.Param(init(keys[0], (d_model, num_experts), param_dtype))
        expert_init = nnx.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
        )
        self.up = nnx.Param(expert_init(keys[1], (num_experts, d_model, hidden), param_dtype))
        self.gate = (
            nnx.Param(expert_init(keys[2], (num_experts, d_model, hidden), param_dtype))
            if activation in GATED
            else None
        )
        self.down = nnx.Param(expert_init(keys[3], (num_experts, hidden, d_model), param_dtype))
        self.rngs = rngs
        self.stats = RoutingStats(_empty_stats(num_experts))

    def route(self, x_TD: jax.Array, *, deterministic: bool | None) -> routing.Routing:
        """The routing of flattened tokens [T, D]."""
        router_in = x_TD.astype(jnp.float32)
        if self.router_jitter and deterministic is False:
            noise = jax.random.uniform(
                self.rngs.dropout(),
                router_in.shape,
                minval=1.0 - self.router_jitter,
                maxval=1.0 + self.router_jitter,
            )
            router_in = router_in * noise
        logits = router_in @ self.router_kernel[...].astype(jnp.float32)
        groups, group = self.groups(x_TD.shape[0])
        logits_GSE = logits.reshape(groups, group, self.num_experts)
        if self.router == "expert_choice":
            capacity = routing.expert_capacity(group, self.num_experts, 1, self.capacity_factor)
            route_group = functools.partial(routing.expert_choice_routing, capacity=capacity)
        else:
            capacity = routing.expert_capacity(
                group, self.num_experts, self.top_k, self.capacity_factor
            )
            route_group = functools.partial(
                routing.top_k_routing,
                k=self.top_k,
                capacity=capacity,
                batch_prioritized=self.batch_prioritized,
            )
        return jax.vmap(route_group)(logits_GSE)

    def groups(self, num_tokens: int) -> tuple[int, int]:
        """(G, S): tokens are routed in G groups of S, so the einsum dispatch costs T * S, not
        T^2 (GShard's groups); one group when there are no more than group_size tokens."""
        if self.group_size is None or num_tokens <= self.group_size:
            return 1, num_tokens
        # The largest group of at most group_size tokens that splits them evenly; one group
        # when only small ones would (groups much smaller than asked starve capacity).
        group = max(d for d in range(1, self.group_size + 1) if num_tokens % d == 0)
        if group < self.group_size // 4:
            return 1, num_tokens
        return num_tokens // group, group

    def expert_params(self) -> dict:
        """The expert weights, expert axis first (what expert parallelism shards)."""
        params = {"up": self.up[...], "down": self.down[...]}
        if self.gate is not None:
            params["gate"] = self.gate[...]
        return params

    def experts(self, x_ECD: jax.Array, params: dict | None = None) -> jax.Array:
        """Every expert on its own tokens: [E, C, D] -> [E, C, D] (params: a shard of them)."""
        return self._expert_ffn(x_ECD, params, lambda x, w: jnp.einsum("eci,eio->eco", x, w))

    def _expert_ffn(self, x, params, matmul):
        """up, activation (gated for SwiGLU), down, with `matmul(x, w)` per expert."""
        params = self.expert_params() if params is None else params
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        h = matmul(x, params["up"].astype(dtype))
        if "gate" in params:
            h = ACTIVATIONS[self.activation](matmul(x, params["gate"].astype(dtype))) * h
        else:
            h = ACTIVATIONS[self.activation](h)
        return matmul(h, params["down"].astype(dtype))

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """[B, S, D] -> [B, S, D]; dropped tokens give 0 (the residual carries them).

        `deterministic` False (training) turns on router jitter; None or True leaves it off.
        """
        batch, length, d_model = x.shape
        x_TD = x.reshape(batch * length, d_model)
        r = self.route(x_TD, deterministic=deterministic)
        self.stats.set_value(jax.tree.map(lambda s: jnp.mean(s, axis=0), r.stats))
        if self.dispatch == "einsum":
            y_TD = self._einsum_experts(x_TD, r)
        elif self.router == "expert_choice":
            y_TD = self._gather_experts(x_TD, r)
        else:
            y_TD = self._sorted_experts(x_TD, r)
        return y_TD.reshape(batch, length, d_model).astype(x.dtype)

    def _grouped_experts(self, x_GECD):
        """The experts over every group's slots at once: [G, E, C, D] -> [G, E, C, D]."""
        groups, experts, capacity, d_model = x_GECD.shape
        x_EXD = jnp.swapaxes(x_GECD, 0, 1).reshape(experts, groups * capacity, d_model)
        y_EXD = self.experts(x_EXD).reshape(experts, groups, capacity, d_model)
        return jnp.swapaxes(y_EXD, 0, 1)

    def _einsum_experts(self, x_TD, r):
        groups, group, experts, capacity = r.dispatch.shape
        x_GSD = x_TD.reshape(groups, group, -1)
        if self.mesh is not None and self.mesh.shape[self.expert_axis] > 1:
            y_GSD = expert_parallel.expert_parallel_dispatch(
                lambda params, x: self.experts(x, params),
                x_GSD,
                r.dispatch.astype(x_TD.dtype),
                r.combine.astype(x_TD.dtype),
                self.expert_params(),
                mesh=self.mesh,
                axis=self.expert_axis,
            )
            return y_GSD.reshape(x_TD.shape)
        x_GECD = jnp.einsum("gsec,gsd->gecd", r.dispatch.astype(x_TD.dtype), x_GSD)
        y_GECD = self._grouped_experts(x_GECD).astype(x_TD.dtype)
        return jnp.einsum("gsec,gecd->gsd", r.combine.astype(x_TD.dtype), y_GECD).reshape(
            x_TD.shape
        )

    def _gather_experts(self, x_TD, r):
        # Expert choice: expert e of group g took tokens r.expert_index[g, e] (within the
        # group); gather them, run the experts, scatter-add the weighted outputs back.
        groups, group = r.dispatch.shape[:2]
        tokens_GEC = r.expert_index + group * jnp.arange(groups)[:, None, None]
        y_GECD = self._grouped_experts(x_TD[tokens_GEC]) * r.weight[..., None].astype(x_TD.dtype)
        return (
            jnp.zeros_like(x_TD)
            .at[tokens_GEC.reshape(-1)]
            .add(y_GECD.reshape(-1, x_TD.shape[-1]).astype(x_TD.dtype))
        )

    def _sorted_experts(self, x_TD, r):
        # Token choice: (token, choice) pairs sorted by expert, experts run as one grouped
        # matmul over contiguous groups; a dropped choice has weight 0.
        num_tokens, k = x_TD.shape[0], r.expert_index.shape[-1]
        r = r._replace(
            expert_index=r.expert_index.reshape(num_tokens, k),
            weight=r.weight.reshape(num_tokens, k),
        )
        expert_P = r.expert_index.reshape(-1)
        token_P = jnp.repeat(jnp.arange(num_tokens), k)
        order = jnp.argsort(expert_P, stable=True)
        # Tiles of one expert each (`ops.grouped_matmul`): XLA's CPU ragged_dot runs every expert
        # over every row, so its time grows with the number of experts.
        sorted_expert = expert_P[order]
        ys = self._expert_ffn(
            x_TD[token_P[order]], None, lambda x, w: grouped_matmul(x, sorted_expert, w)
        )
        ys = ys * r.weight.reshape(-1)[order][:, None].astype(ys.dtype)
        return jnp.zeros_like(x_TD).at[token_P[order]].add(ys.astype(x_TD.dtype))
