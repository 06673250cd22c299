"""Loop carries that also work under `shard_map`."""

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
