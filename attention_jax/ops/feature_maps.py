"""Feature maps phi for kernelized attention: softmax(q.k) is replaced by phi(q).phi(k).

One small class per map, each knowing its feature count, how it treats queries and keys, whether
it takes the logit scale, and any closed form of its kernel. `feature_map(name, **params)` builds
the named ones:
  elu        elu(x) + 1 (Katharopoulos et al. 2020).
  relu       relu(x).
  favor      Performer FAVOR+ positive random features (Choromanski et al. 2021): an unbiased
             estimator of exp(q.k * scale); the [num_features, head_dim] `projection` is explicit
             (draw it with `favor_projection`).
  taylor     1 + s + s^2 / 2, the second-order Taylor expansion of exp(s) with s = q.k * scale, as
             features [1, x, vec(x x^T) / sqrt(2)] (Based, Arora et al. 2024); always positive.
  cosformer  relu(x) re-weighted by cos and sin of the position (Qin et al. 2022), so that
             phi(q_i).phi(k_j) = relu(q_i).relu(k_j) cos(pi / 2 * (i - j) / max_len).

Your own map is a `FeatureMap` subclass; it works wherever a name does (`ops.linear`,
`linear_state_init`, `linear_step`). Its kernel must be non-negative, phi(q).phi(k) >= 0, since
the output is normalised by sum_j phi(q).phi(k_j):

    class SquaredRelu(ops.FeatureMap):
        name = "squared_relu"

        def num_features(self, head_dim):
            return head_dim

        def features(self, x, positions):
            del positions  # the same map at every position
            return jax.nn.relu(x) ** 2

    out = ops.linear(q, k, v, feature_map=SquaredRelu(), is_causal=True)
    state = ops.linear_state_init(B, K, H, feature_map=SquaredRelu())

Stabilisers: favor's exp() is shifted by a constant per query row and a constant per (batch,
head) over all keys. Both cancel between numerator and normaliser, so the attention is unchanged
and nothing overflows.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from attention_jax.ops import contract


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
    q, r = jnp.linalg.qr(gaussians)  # [blocks, H, H], orthonormal columns
    # QR fixes the signs of R's diagonal, which leans Q's columns towards one orthant (a mean of
    # ~0.1 per coordinate at H = 4) and biases the estimator; flipping each column by the sign of
    # R's diagonal makes Q uniformly (Haar) distributed (Mezzadri 2007).
    q = q * jnp.sign(jnp.diagonal(r, axis1=1, axis2=2))[:, None, :]
    directions = jnp.swapaxes(q, 1, 2).reshape(num_blocks * head_dim, head_dim)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(norm_key, (num_features, head_dim)), axis=1)
    return directions * norms[:, None]


def _zero_invalid(phi, valid):
    return phi if valid is None else jnp.where(valid[..., None], phi, 0.0)


class FeatureMap(abc.ABC):
    """phi for kernelized attention; call it on queries or keys [..., T, H].

    A subclass defines `num_features` and `features`; the rest has defaults that fit a map with
    no temperature, no closed-form kernel and no parameters to check against the call.

    Attributes:
      name: used in error messages; the class name unless set.
      scaled: True for maps whose kernel approximates exp(q.k * scale): `prepare` multiplies
        their inputs by sqrt(scale), and only they accept a `scale`.
      kernel: None, or phi(q).phi(k) as a function of s = q.k of prepared inputs, for maps whose
        kernel is one: causal chunks then score pairs with H multiply-adds instead of F.
      log_features: None, or log phi(x) of prepared x (-inf on rows where `valid` is False), for
        maps whose features are exponentials: causal and decoding forms then stabilise keys in
        log space with a running maximum, as an online softmax does.
    """

    scaled: ClassVar[bool] = False
    kernel: ClassVar[Callable | None] = None
    log_features: ClassVar[Callable | None] = None

    @property
    def name(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    def num_features(self, head_dim: int) -> int:
        """F, the length of phi(x) for inputs of size head_dim."""

    @abc.abstractmethod
    def features(self, x: jax.Array, positions: jax.Array | None) -> jax.Array:
        """phi(x) [..., T, F] of prepared x [..., T, H].

        `positions` (int, broadcastable to x.shape[:-1], or None for the index on axis -2) is
        for maps that depend on the position (cosformer); the others ignore it.
        """

    def __call__(self, x, *, is_query: bool, scale=None, positions=None, valid=None):
        """phi(x) [..., T, F] in float32 (or float64) for x [..., T, H].

        Args:
          x: queries or keys, sequence on axis -2.
          is_query: for maps that treat queries and keys differently (favor's stabiliser).
          scale: logit scale for the scaled maps (favor, taylor); default 1/sqrt(H).
          positions: int positions broadcastable to x.shape[:-1] (cosformer's re-weighting).
          valid: optional bool broadcastable to x.shape[:-1]; invalid rows give zero features.
        """
        del is_query  # the same map for both
        return _zero_invalid(self.features(self.prepare(x, scale), positions), valid)

    def prepare(self, x, scale=None):
        """x in float32 (or wider), times sqrt(scale) for the scaled maps."""
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.scaled:
            scale = x.shape[-1] ** -0.5 if scale is None else scale
            x = x * jnp.sqrt(jnp.asarray(scale, x.dtype))
        return x

    def for_call(self, kind: str, head_dim: int, seq_len: int | None) -> FeatureMap:
        """The map for one call, checked against head_dim and the sequence length.

        `seq_len` is the longest of q_len and kv_len, or None when decoding. A map may return
        a copy with parameters that default to the call's (cosformer's max_len).
        """
        del kind, head_dim, seq_len
        return self


class Elu(FeatureMap):
    name = "elu"

    def num_features(self, head_dim):
        return head_dim

    def features(self, x, positions):
        del positions
        return jax.nn.elu(x) + 1.0


class Relu(FeatureMap):
    name = "relu"

    def num_features(self, head_dim):
        return head_dim

    def features(self, x, positions):
        del positions
        return jax.nn.relu(x)


def taylor_kernel(s):
    """phi(q).phi(k) of the taylor map as a function of s = q.k (scaled): 1 + s + s^2 / 2."""
    return 1.0 + s + 0.5 * s * s


class Taylor(FeatureMap):
    name = "taylor"
    scaled = True
    kernel = staticmethod(taylor_kernel)

    def num_features(self, head_dim):
        return 1 + head_dim + head_dim * head_dim

    def features(self, x, positions):
        del positions
        outer = x[..., :, None] * x[..., None, :] / math.sqrt(2.0)
        ones = jnp.ones((*x.shape[:-1], 1), x.dtype)
        return jnp.concatenate([ones, x, outer.reshape(*x.shape[:-1], -1)], axis=-1)


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


@dataclasses.dataclass(frozen=True, eq=False)
class Favor(FeatureMap):
    """FAVOR+; `projection` [num_features, head_dim] is required (None only to say how to draw
    one). `features` is the unstabilised estimator, for checking it; calls stabilise."""

    projection: jax.Array | None = None
    name: ClassVar[str] = "favor"
    scaled: ClassVar[bool] = True

    def __post_init__(self):
        if self.projection is None or jnp.ndim(self.projection) != 2:
            raise ValueError(
                "feature map 'favor' needs a projection [num_features, head_dim]; draw one with "
                "ops.favor_projection(key, num_features, head_dim), or use kind 'performer'."
            )

    def num_features(self, head_dim):
        return self.projection.shape[0]

    def log_features(self, x, *, valid=None):
        log_phi = favor_log_features(x, self.projection)
        return log_phi if valid is None else jnp.where(valid[..., None], log_phi, -jnp.inf)

    def features(self, x, positions):
        del positions
        return jnp.exp(self.log_features(x))

    def __call__(self, x, *, is_query: bool, scale=None, positions=None, valid=None):
        """Stabilised features: shifted per query row, or per (batch, head) over all valid keys
        (a key shift must be one constant for every key to cancel); invalid keys stay out of it."""
        log_phi = self.log_features(self.prepare(x, scale), valid=valid)
        axes = (-1,) if is_query else (-2, -1)
        return _zero_invalid(jnp.exp(log_phi - finite_max(log_phi, axes)), valid)

    def for_call(self, kind, head_dim, seq_len):
        if self.projection.shape[-1] != head_dim:
            raise ValueError(
                f"{kind}: favor projection {self.projection.shape} does not match head_dim "
                f"{head_dim}; it must be [num_features, {head_dim}]."
            )
        return self


@dataclasses.dataclass(frozen=True)
class Cosformer(FeatureMap):
    """cosFormer; `max_len` is the M of cos(pi / 2 * (i - j) / M), positions stay below it;
    None takes the call's sequence length (decoding needs it fixed)."""

    max_len: int | None = None
    name: ClassVar[str] = "cosformer"

    def __post_init__(self):
        if self.max_len is not None:
            contract.static_int("cosformer", "max_len", self.max_len)

    def num_features(self, head_dim):
        return 2 * head_dim

    def features(self, x, positions):
        if positions is None:
            positions = jnp.arange(x.shape[-2])
        angle = (jnp.pi / 2) * jnp.asarray(positions, x.dtype) / self.max_len
        r = jax.nn.relu(x)
        return jnp.concatenate([r * jnp.cos(angle)[..., None], r * jnp.sin(angle)[..., None]], -1)

    def for_call(self, kind, head_dim, seq_len):
        if self.max_len is None:
            if seq_len is None:
                raise ValueError(
                    f"{kind}: cosformer decoding needs ops.feature_map('cosformer', max_len=M): "
                    "positions are re-weighted by cos(pi/2 (i - j) / M), and M must be fixed "
                    "before the first token (use the same M in the parallel form)."
                )
            return Cosformer(max_len=seq_len)
        if seq_len is not None and self.max_len < seq_len:
            raise ValueError(
                f"cosformer: max_len ({self.max_len}) must be >= the sequence length ({seq_len}) "
                "so that the re-weighting cos(pi/2 (i - j) / max_len) stays non-negative."
            )
        return self


MAPS: dict[str, type[FeatureMap]] = {
    "elu": Elu,
    "relu": Relu,
    "favor": Favor,
    "taylor": Taylor,
    "cosformer": Cosformer,
}
NAMES = tuple(MAPS)
SCALED = tuple(name for name, cls in MAPS.items() if cls.scaled)


def feature_map(name: str, **params) -> FeatureMap:
    """The feature map `name` with its parameters (see the module docstring)."""
    if name not in MAPS:
        raise ValueError(f"unknown feature map {name!r}; choose one of {NAMES}.")
    allowed = set(inspect.signature(MAPS[name]).parameters)
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"feature map {name!r} takes {sorted(allowed) or 'no parameters'}; got "
            f"{sorted(unknown)}."
        )
    return MAPS[name](**params)
