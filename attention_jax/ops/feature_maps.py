"""Feature maps phi for kernelized attention: softmax(q.k) is replaced by phi(q).phi(k).

`feature_map(name, **params)` returns a `FeatureMap`, a pure function of the inputs:
  elu        elu(x) + 1 (Katharopoulos et al. 2020).
  relu       relu(x).
  favor      Performer FAVOR+ positive random features (Choromanski et al. 2021): an unbiased
             estimator of exp(q.k * scale); the [num_features, head_dim] `projection` is explicit
             (draw it with `favor_projection`).
  taylor     1 + s + s^2 / 2, the second-order Taylor expansion of exp(s) with s = q.k * scale, as
             features [1, x, vec(x x^T) / sqrt(2)] (Based, Arora et al. 2024); always positive.
  cosformer  relu(x) re-weighted by cos and sin of the position (Qin et al. 2022), so that
             phi(q_i).phi(k_j) = relu(q_i).relu(k_j) cos(pi / 2 * (i - j) / max_len).

Stabilisers: favor's exp() is shifted by a constant per query row and a constant per (batch,
head) over all keys. Both cancel between numerator and normaliser, so the attention is unchanged
and nothing overflows.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

NAMES = ("elu", "relu", "favor", "taylor", "cosformer")
# Maps whose kernel approximates exp(q.k * scale): they take the logit scale; the others have none.
SCALED = ("favor", "taylor")


def favor_projection(key: jax.Array, num_features: int, head_dim: int, orthogonal: bool = True):
    """Random features [num_features, head_dim] for FAVOR+; rows ~ N(0, I) in distribution.

    With `orthogonal`, rows come in blocks of head_dim mutually orthogonal directions (Q of a
    Gaussian's QR) with chi-distributed norms, which lowers the estimator's variance.
    """
    if num_features < 1 or head_dim < 1:
        raise ValueError(
            f"favor_projection: num_features ({num_features}) and head_dim ({head_dim}) must be "
            "positive."
        )
    if not orthogonal:
        return jax.random.normal(key, (num_features, head_dim))
    num_blocks = -(-num_features // head_dim)
    block_key, norm_key = jax.random.split(key)
    gaussians = jax.random.normal(block_key, (num_blocks, head_dim, head_dim))
    q, _ = jnp.linalg.qr(gaussians)  # [blocks, H, H], orthonormal columns
    directions = jnp.swapaxes(q, 1, 2).reshape(num_blocks * head_dim, head_dim)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(norm_key, (num_features, head_dim)), axis=1)
    return directions * norms[:, None]


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureMap:
    """phi for one kind of kernelized attention; call it on queries or keys [..., T, H].

    Attributes:
      name: one of NAMES.
      projection: favor only, [num_features, head_dim].
      max_len: cosformer only: the M of cos(pi / 2 * (i - j) / M); positions must stay below it.
    """

    name: str
    projection: jax.Array | None = None
    max_len: int | None = None

    def num_features(self, head_dim: int) -> int:
        """F, the length of phi(x) for inputs of size head_dim."""
        if self.name == "favor":
            return self.projection.shape[0]
        if self.name == "taylor":
            return 1 + head_dim + head_dim * head_dim
        if self.name == "cosformer":
            return 2 * head_dim
        return head_dim

    def __call__(self, x, *, is_query: bool, scale=None, positions=None, valid=None):
        """phi(x) [..., T, F] in float32 (or float64) for x [..., T, H].

        Args:
          x: queries or keys, sequence on axis -2.
          is_query: picks favor's stabiliser (per row for queries, per sequence for keys).
          scale: logit scale for favor and taylor; default 1/sqrt(H).
          positions: cosformer only: int positions broadcastable to x.shape[:-1].
          valid: optional bool broadcastable to x.shape[:-1]; invalid rows give zero features
            and, for favor keys, stay out of the stabiliser.
        """
        x = self.prepare(x, scale)
        if self.name == "favor":
            log_phi = self.log_favor(x, valid=valid)
            axes = (-1,) if is_query else (-2, -1)
            phi = jnp.exp(log_phi - finite_max(log_phi, axes))
        else:
            phi = self._deterministic(x, positions)
        if valid is not None:
            phi = jnp.where(valid[..., None], phi, 0.0)
        return phi

    def prepare(self, x, scale=None):
        """x in float32 (or wider), times sqrt(scale) for the exp-approximating maps."""
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.name in SCALED:
            scale = x.shape[-1] ** -0.5 if scale is None else scale
            x = x * jnp.sqrt(jnp.asarray(scale, x.dtype))
        return x

    def log_favor(self, x, *, valid=None):
        """favor's log-features [..., T, m] of already-scaled x; -inf on invalid rows."""
        log_phi = favor_log_features(x, self.projection)
        if valid is not None:
            log_phi = jnp.where(valid[..., None], log_phi, -jnp.inf)
        return log_phi

    def _deterministic(self, x, positions):
        if self.name == "elu":
            return jax.nn.elu(x) + 1.0
        if self.name == "relu":
            return jax.nn.relu(x)
        if self.name == "taylor":
            outer = x[..., :, None] * x[..., None, :] / math.sqrt(2.0)
            ones = jnp.ones((*x.shape[:-1], 1), x.dtype)
            return jnp.concatenate([ones, x, outer.reshape(*x.shape[:-1], -1)], axis=-1)
        # cosformer
        angle = (jnp.pi / 2) * jnp.asarray(positions, x.dtype) / self.max_len
        r = jax.nn.relu(x)
        return jnp.concatenate([r * jnp.cos(angle)[..., None], r * jnp.sin(angle)[..., None]], -1)


def finite_max(x, axes) -> jax.Array:
    """max over `axes` (kept), as a constant for the gradient; 0 where everything is -inf."""
    top = jax.lax.stop_gradient(x.max(axis=axes, keepdims=True))
    return jnp.where(jnp.isfinite(top), top, 0.0)


def favor_log_features(x, projection):
    """log of FAVOR+ features before stabilising: w.x - |x|^2 / 2 - log(sqrt(m)), [..., m]."""
    m = projection.shape[0]
    return (
        jnp.einsum("...h,mh->...m", x, projection.astype(x.dtype))
        - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
        - 0.5 * math.log(m)
    )


def feature_map(name: str, **params) -> FeatureMap:
    """The feature map `name` with its parameters (see the module docstring)."""
    if name not in NAMES:
        raise ValueError(f"unknown feature map {name!r}; choose one of {NAMES}.")
    allowed = {"favor": {"projection"}, "cosformer": {"max_len"}}.get(name, set())
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"feature map {name!r} takes {sorted(allowed) or 'no parameters'}; got "
            f"{sorted(unknown)}."
        )
    if name == "favor":
        projection = params.get("projection")
        if projection is None or jnp.ndim(projection) != 2:
            raise ValueError(
                "feature map 'favor' needs projection=[num_features, head_dim]; draw one with "
                "ops.favor_projection(key, num_features, head_dim)."
            )
    if name == "cosformer":
        max_len = params.get("max_len")
        if max_len is not None and (
            isinstance(max_len, (bool, np.bool_))
            or not isinstance(max_len, (int, np.integer))
            or max_len < 1
        ):
            raise ValueError(f"cosformer: max_len must be a positive int; got {max_len!r}.")
    return FeatureMap(name, **params)
