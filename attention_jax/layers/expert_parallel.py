"""Expert parallelism: experts split over a mesh axis, tokens moved by all-to-all in shard_map.

Each device holds G / P token groups and E / P experts (P devices on the axis). It builds the
[G/P, E, C, D] expert inputs of its own groups, an all-to-all hands every device the slots of
its own experts from all groups ([G, E/P, C, D]), the local experts run, and a second all-to-all
returns the outputs to the devices that own the tokens (GShard, Lepikhin et al. 2020).
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P


def expert_parallel_dispatch(
    experts_fn,
    x_GSD,
    dispatch_GSEC,
    combine_GSEC,
    expert_params,
    *,
    mesh: Mesh,
    axis: str = "expert",
):
    """sum_e,c combine[g,s,e,c] * expert_e(tokens dispatched to (e, c)) with experts sharded.

    Args:
      experts_fn: (expert_params, x [E', C', D]) -> [E', C', D], the experts on their slots.
      x_GSD: tokens [G, S, D] in G routing groups; G divisible by the axis size.
      dispatch_GSEC, combine_GSEC: the routing [G, S, E, C].
      expert_params: a pytree of arrays with the expert axis E first, E divisible by the axis.
      mesh: a mesh with `axis`; other axes see replicated values.
    """
    size = mesh.shape[axis]
    groups, experts = dispatch_GSEC.shape[0], dispatch_GSEC.shape[2]
    if groups % size or experts % size:
        raise ValueError(
            f"expert parallelism over {size} devices needs groups ({groups}) and experts "
            f"({experts}) divisible by {size}."
        )

    def local(x, dispatch, combine, params):
        x_GECD = jnp.einsum("gsec,gsd->gecd", dispatch, x)
        # Give each device its experts' slots from every group: split E, gather G.
        x_GECD = jax.lax.all_to_all(x_GECD, axis, split_axis=1, concat_axis=0, tiled=True)
        g, e, c, d = x_GECD.shape
        x_EXD = jnp.swapaxes(x_GECD, 0, 1).reshape(e, g * c, d)
        y_GECD = jnp.swapaxes(experts_fn(params, x_EXD).reshape(e, g, c, d), 0, 1)
        # And back: split G to the token owners, gather E.
        y_GECD = jax.lax.all_to_all(y_GECD, axis, split_axis=0, concat_axis=1, tiled=True)
        return jnp.einsum("gsec,gecd->gsd", combine, y_GECD.astype(combine.dtype))

    sharded = functools.partial(
        jax.shard_map,
        mesh=mesh,
        in_specs=(P(axis), P(axis), P(axis), P(axis)),
        out_specs=P(axis),
    )
    return sharded(local)(x_GSD, dispatch_GSEC, combine_GSEC, expert_params)
