"""Performer's random features as layer state: fixed, redrawn on request, or every N calls.

FAVOR+ estimates softmax attention with random projections. Keeping one draw fixed makes the
layer deterministic; redrawing during training (Choromanski et al. 2021 redraw periodically)
keeps the model from fitting one draw's errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import ops
from attention_jax.layers import arguments


class FeatureProjection(nnx.Variable):
    """Random features of a kernelized kind: state, but not trained."""


class RandomFeatures(nnx.Module):
    """A [num_features, head_dim] FAVOR+ projection, optionally redrawn every N training calls.

    Args:
      num_features: M, rows of the projection.
      head_dim: H.
      projection: the first projection [num_features, head_dim]; default a fresh draw.
      redraw_every: redraw on every N-th training call (counted inside jit); None never does.
      rngs: draws the first projection and the key later draws derive from.
    """

    def __init__(
        self, num_features: int, head_dim: int, *, projection=None, redraw_every=None, rngs
    ):
        num_features = arguments.positive_int("RandomFeatures", "num_features", num_features)
        head_dim = arguments.positive_int("RandomFeatures", "head_dim", head_dim)
        if redraw_every is not None and (isinstance(redraw_every, bool) or redraw_every < 1):
            raise ValueError(
                f"redraw_every must be a positive number of calls or None; got {redraw_every!r}."
            )
        self.num_features, self.head_dim, self.redraw_every = num_features, head_dim, redraw_every
        if projection is None:
            projection = ops.favor_projection(rngs.params(), num_features, head_dim)
        elif jnp.shape(projection) != (num_features, head_dim):
            raise ValueError(
                f"RandomFeatures: projection must be [num_features, head_dim] = "
                f"[{num_features}, {head_dim}]; got {jnp.shape(projection)}."
            )
        self.projection = FeatureProjection(jnp.asarray(projection))
        self.redraw_key = FeatureProjection(rngs.params())
        self.training_calls = FeatureProjection(jnp.zeros((), jnp.int32))

    def redraw(self, key: jax.Array) -> None:
        """Replaces the projection with a fresh draw from `key`."""
        self.projection[...] = ops.favor_projection(key, self.num_features, self.head_dim)

    def __call__(self, training: bool) -> jax.Array:
        """The projection for this call, first redrawn if this is an N-th training call."""
        if training and self.redraw_every is not None:
            calls = self.training_calls[...] + 1
            self.training_calls[...] = calls
            self.projection[...] = jax.lax.cond(
                calls % self.redraw_every == 0,
                lambda: ops.favor_projection(
                    jax.random.fold_in(self.redraw_key[...], calls),
                    self.num_features,
                    self.head_dim,
                ),
                lambda: self.projection[...],
            )
        return self.projection[...]
