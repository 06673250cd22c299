"""Rows times their own group's matrix, computing only the rows there are: a grouped matmul.

`grouped_matmul(x, group, w)` is `x[a] @ w[group[a]]` for every row a. Routed computations
need it: each (token, chosen expert) pair meets one expert's weights, so the work should follow
the number of pairs, not pairs x experts. The rows are sorted by group and each group padded up
to a whole tile of `tile` rows (MegaBlocks' block padding); then every tile belongs to one group
and is multiplied by that group's matrix: 2 * (rows + groups * tile) * K * N FLOPs at most,
exact (no row is dropped). `TilePlan` is that arrangement, for callers (MoBA) that do more than
one product per tile.

`jax.lax.ragged_dot` computes the same function, but on CPU XLA expands it over every group
(16 groups: 3.4x the time of 4, measured), so its time grows with the number of experts.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_TILE = 32


class TilePlan(NamedTuple):
    """Where each row goes among tiles of `tile` rows, one group per tile.

    Attributes:
      slot: int [A], row a's position among the num_tiles * tile padded rows.
      row: int [num_tiles * tile], the row each padded position holds, -1 for padding.
      tile_group: int [num_tiles], each tile's group (tiles past the used ones: the last group;
        they hold zeros).
      num_tiles: static, ceil(A / tile) + G (bounds the tiles any grouping needs).
      tile: static rows per tile.
    """

    slot: jax.Array
    row: jax.Array
    tile_group: jax.Array
    num_tiles: int
    tile: int


@jax.custom_vjp
def _move_rows(x, take_from, give_back):
    """out[i] = x[take_from[i]] (0 where take_from[i] is -1), for a one-to-one move of rows.

    give_back is the inverse move (x's row j went to give_back[j], or -1 if it went nowhere),
    so the gradient is a gather as well: XLA's CPU scatter, which autodiff would use, is
    several times slower than a gather of the same rows.
    """
    return _gather_or_zero(x, take_from)


def _gather_or_zero(x, index):
    taken = jnp.take(x, jnp.maximum(index, 0), axis=0)
    return jnp.where((index >= 0).reshape(-1, *(1,) * (x.ndim - 1)), taken, 0)


def _move_rows_fwd(x, take_from, give_back):
    return _gather_or_zero(x, take_from), (take_from, give_back)


def _move_rows_bwd(residuals, d_out):
    take_from, give_back = residuals
    return _gather_or_zero(d_out, give_back), None, None


_move_rows.defvjp(_move_rows_fwd, _move_rows_bwd)


def plan_tiles(group_A: jax.Array, num_groups: int, tile: int = DEFAULT_TILE) -> TilePlan:
    """The tile arrangement of rows whose groups are group_A (int [A] in [0, num_groups))."""
    A = group_A.shape[0]
    order = jnp.argsort(group_A, stable=True)
    sizes = jnp.bincount(group_A, length=num_groups)
    padded = -(-sizes // tile) * tile
    padded_end = jnp.cumsum(padded)
    sorted_group = group_A[order]
    rank = jnp.arange(A) - (jnp.cumsum(sizes) - sizes)[sorted_group]
    # Sum over groups of ceil(size / tile) <= ceil(A / tile) + G.
    num_tiles = -(-A // tile) + num_groups
    slot = jnp.zeros((A,), jnp.int32).at[order].set((padded_end - padded)[sorted_group] + rank)
    row = jnp.full((num_tiles * tile,), -1, jnp.int32).at[slot].set(jnp.arange(A))
    tile_group = jnp.sum(padded_end[None, :] <= tile * jnp.arange(num_tiles)[:, None], axis=1)
    return TilePlan(slot, row, jnp.minimum(tile_group, num_groups - 1), num_tiles, tile)


def to_tiles(plan: TilePlan, x_AK: jax.Array, fill=0) -> jax.Array:
    """Rows [A, ...] -> [num_tiles, tile, ...] by group; padding rows hold `fill`."""
    padded = _move_rows(x_AK, plan.row, plan.slot)
    if fill != 0:
        is_padding = (plan.row < 0).reshape(-1, *(1,) * (x_AK.ndim - 1))
        padded = jnp.where(is_padding, jnp.asarray(fill, x_AK.dtype), padded)
    return padded.reshape(plan.num_tiles, plan.tile, *x_AK.shape[1:])


def from_tiles(plan: TilePlan, y_tiles: jax.Array) -> jax.Array:
    """[num_tiles, tile, ...] -> the rows [A, ...] in their original order."""
    y = y_tiles.reshape(plan.num_tiles * plan.tile, *y_tiles.shape[2:])
    return _move_rows(y, plan.slot, plan.row)


def grouped_matmul(
    x_AK: jax.Array, group_A: jax.Array, w_GKN: jax.Array, *, tile: int = DEFAULT_TILE
) -> jax.Array:
    """Row a of x times w[group[a]].

    Args:
      x_AK: [A, K] rows.
      group_A: int [A], each row's group in [0, G).
      w_GKN: [G, K, N] one matrix per group.
      tile: rows per tile; the padding costs at most G * tile extra rows.

    Returns:
      [A, N] in the result dtype of x @ w.
    """
    plan = plan_tiles(group_A, w_GKN.shape[0], tile)
    y = jnp.einsum("tik,tkn->tin", to_tiles(plan, x_AK), w_GKN[plan.tile_group])
    return from_tiles(plan, y)
