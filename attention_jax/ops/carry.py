"""Scanning over chunks: inputs split into chunks, and loop carries that work under `shard_map`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def varying_like(carry, *inputs):
    """Gives fresh loop-carry values the per-device variance of the inputs (for shard_map).

    Under `shard_map` a scan carry must vary over the same mesh axes on entry and exit; constants
    start invariant while the loop mixes in sharded inputs. Adding a zero derived from every
    input (`zeros_like` keeps variance) fixes that and is a no-op everywhere else.
    """
    zero = sum(jnp.zeros_like(x, jnp.int32, shape=()) for x in jax.tree.leaves(inputs))
    return jax.tree.map(lambda c: c + zero, carry)


def chunks_leading(x: jax.Array, axis: int, chunk: int, pad_value=0.0) -> jax.Array:
    """`axis` padded at its end with `pad_value` to a multiple of `chunk`, then split into
    [num_chunks, ..., chunk, ...] with the chunks leading, as `lax.scan` takes them."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, -x.shape[axis] % chunk)
    x = jnp.pad(x, widths, constant_values=pad_value)
    x = x.reshape(*x.shape[:axis], x.shape[axis] // chunk, chunk, *x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)
