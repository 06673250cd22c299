"""Kernelized (linear) attention: phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1), O(n) in length.

Never builds an n x n array. Bidirectional: one pass builds the state phi(K)^T V [F, Hv] and the
normaliser sum phi(K), which every query reads. Causal: chunkwise parallel (as in
flash-linear-attention's chunk form): inside a chunk of C tokens the masked quadratic form
(C x C), across chunks the running state carried by `lax.scan`, so work is O(n * C * F) and the
per-token sequential scan of the Performer reference is gone. `linear_recurrent` has the
O(1)-per-token decoding form.

Kinds: `linear` (any feature map, default elu), `performer` (favor), `based` (taylor),
`cosformer`. Features, state and normaliser are float32 (float64 under x64) for any input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attention_jax.ops import contract
from attention_jax.ops.carry import chunks_leading, varying_like
from attention_jax.ops.feature_maps import (
    SCALED,
    FeatureMap,
    favor_projection,
    feature_map,
    finite_max,
)
from attention_jax.ops.fixed_draws import drawn_once

DEFAULT_CHUNK = 128
DEFAULT_FAVOR_FEATURES = 256


def normalise(num, den):
    """num / den, and 0 (with zero gradient) where den is below the smallest normal float.

    A row with no visible key, or whose relu features all vanish, has num = den = 0: it gives 0,
    never NaN, in value and gradient. Every feature map here has phi(q).phi(k) >= 0 and
    |num| <= den * max|v|, so a tiny floor loses nothing; a floor of 1e-6 (common in other code)
    would bias FAVOR+, whose normalisers can legitimately be that small.

    A NaN den (a NaN or Inf in q or k) is not "below the floor": it passes through as NaN, as
    dense attention's would, so a diverging run shows NaN instead of a plausible-looking 0.
    """
    ok = ~(den <= jnp.finfo(den.dtype).tiny)  # True for NaN, which every comparison fails
    return jnp.where(ok[..., None], num / jnp.where(ok, den, 1.0)[..., None], 0.0)


def _positions_valid(lengths, size):
    """Bool [B, size]: position < length, or None when there are no lengths."""
    if lengths is None:
        return None
    return jnp.arange(size)[None, :] < lengths[:, None]


def _bidirectional(fq_BKGTF, fk_BKSF, v_BKSV):
    state_BKFV = jnp.einsum("bksf,bksv->bkfv", fk_BKSF, v_BKSV)
    norm_BKF = fk_BKSF.sum(axis=2)
    num = jnp.einsum("bkgtf,bkfv->bkgtv", fq_BKGTF, state_BKFV)
    den = jnp.einsum("bkgtf,bkf->bkgt", fq_BKGTF, norm_BKF)
    return num, den


def _causal_chunkwise(fq_BKGTF, fk_BKSF, v_BKSV, chunk, log_keys=False, pairs=None):
    """Causal num and den: masked C x C blocks inside chunks, a scanned state across them.

    With `log_keys`, fk holds log-features (`FeatureMap.log_features`, favor's): each chunk
    exponentiates them against the running maximum so far, rescaling the carried state when it
    grows (as an online softmax does). A single maximum over the whole sequence would leave early
    tokens, whose keys may be far smaller than later ones, with normalisers that underflow.

    `pairs` = (q_BKGTH, k_BKSH, kv_valid_B1S or None, kernel) scores the C x C blocks as
    kernel(q.k) for a map whose phi(q).phi(k) is a function of q.k (`FeatureMap.kernel`, taylor's):
    H multiply-adds a pair instead of F = 1 + H + H^2, which makes Based's blocks as cheap as
    softmax's.
    """
    B, K, G, T, F = fq_BKGTF.shape
    Hv = v_BKSV.shape[-1]
    # A sequence shorter than a chunk is one chunk of its own length: padding it to the chunk
    # would only add masked work (9x the time of linear attention at T=64, chunk 128, on CPU).
    chunk = min(chunk, T)
    pad = -T % chunk

    lower = jnp.tril(jnp.ones((chunk, chunk), bool))
    xs = [
        chunks_leading(fq_BKGTF, 3, chunk),
        chunks_leading(fk_BKSF, 2, chunk, -jnp.inf if log_keys else 0.0),
        chunks_leading(v_BKSV, 2, chunk),
    ]
    if pairs is not None:
        q_BKGTH, k_BKSH, kv_valid, kernel = pairs
        if kv_valid is None:
            kv_valid = jnp.ones((B, 1, T), bool)
        xs += [chunks_leading(q_BKGTH, 3, chunk), chunks_leading(k_BKSH, 2, chunk)]
        xs.append(chunks_leading(kv_valid, 2, chunk, False))

    def block(fq_BKGcF, fk_BKcF, v_BKcV, *raw):
        """The chunk's own num and den (keys of this chunk, causally masked)."""
        if raw:
            q_BKGcH, k_BKcH, valid_B1c = raw
            scores = kernel(jnp.einsum("bkgch,bkdh->bkgcd", q_BKGcH, k_BKcH))
            scores = jnp.where(lower & valid_B1c[:, :, None, None, :], scores, 0.0)
        else:
            scores = jnp.einsum("bkgcf,bkdf->bkgcd", fq_BKGcF, fk_BKcF)
            scores = jnp.where(lower, scores, 0.0)
        return jnp.einsum("bkgcd,bkdv->bkgcv", scores, v_BKcV), scores.sum(-1)

    if T + pad == chunk:  # one chunk: no state to carry
        fq_BKGcF, fk_BKcF, *rest = (x[0] for x in xs)
        if log_keys:
            fk_BKcF = jnp.exp(fk_BKcF - finite_max(fk_BKcF, (-2, -1)))
        num, den = block(fq_BKGcF, fk_BKcF, *rest)
        return num[:, :, :, :T], den[:, :, :, :T]

    def step(carry, xs):
        state_BKFV, norm_BKF, shift_BK11 = carry
        fq_BKGcF, fk_BKcF, v_BKcV = xs[:3]
        if log_keys:
            new_shift = jnp.maximum(shift_BK11, finite_max(fk_BKcF, (-2, -1)))
            rescale = jnp.exp(shift_BK11 - new_shift)
            state_BKFV, norm_BKF = state_BKFV * rescale, norm_BKF * rescale[..., 0]
            fk_BKcF, shift_BK11 = jnp.exp(fk_BKcF - new_shift), new_shift
        num, den = block(fq_BKGcF, fk_BKcF, v_BKcV, *xs[3:])
        num = num + jnp.einsum("bkgcf,bkfv->bkgcv", fq_BKGcF, state_BKFV)
        den = den + jnp.einsum("bkgcf,bkf->bkgc", fq_BKGcF, norm_BKF)
        state_BKFV = state_BKFV + jnp.einsum("bkcf,bkcv->bkfv", fk_BKcF, v_BKcV)
        norm_BKF = norm_BKF + fk_BKcF.sum(axis=2)
        return (state_BKFV, norm_BKF, shift_BK11), (num, den)

    acc = fq_BKGTF.dtype
    # The shift starts at the first chunk's maximum (rescale exp(-inf - m) = 0 of a zero state).
    init = (
        jnp.zeros((B, K, F, Hv), acc),
        jnp.zeros((B, K, F), acc),
        jnp.full((B, K, 1, 1), -jnp.inf, acc),
    )
    init = varying_like(init, *xs[:3])
    _, (num, den) = lax.scan(step, init, tuple(xs))
    # [chunks, B, K, G, C, ...] -> [B, K, G, T, ...]
    num = jnp.moveaxis(num, 0, 3).reshape(B, K, G, T + pad, Hv)[:, :, :, :T]
    den = jnp.moveaxis(den, 0, 3).reshape(B, K, G, T + pad)[:, :, :, :T]
    return num, den


def linear(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    feature_map: str | FeatureMap = "elu",
    chunk_size: int = DEFAULT_CHUNK,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
    kind: str = "linear",
) -> jax.Array:
    """Kernelized attention phi(q).phi(k) in O(n) time and memory.

    Args:
      query: [B, T, N, H].
      key: [B, S, K, H] with N % K == 0.
      value: [B, S, K, Hv].
      bias, mask, local_window_size, segment ids: refused (ValueError): no score matrix exists.
      feature_map: a name from `feature_maps.NAMES` ('favor' needs a projection: use
        `performer`), a map from `ops.feature_map(...)`, or your own `ops.FeatureMap` subclass.
      chunk_size: causal only: tokens per chunk (any size; T is padded internally).
      scale: logit scale for the exp-approximating maps (favor, taylor), default 1/sqrt(H);
        must be positive (a traced scale cannot be checked: a non-positive one gives NaN);
        refused for elu, relu and cosformer, whose kernels have no temperature.
      is_causal: query i sees keys 0..i (needs T == S).
      query_seq_lengths: optional int [B]; query rows past the length output zeros.
      key_value_seq_lengths: optional int [B]; keys past the length contribute nothing.
      kind: the name used in error messages.

    Returns:
      [B, T, N, Hv] in the query dtype.
    """
    contract.refuse(
        kind,
        "kernelized attention has no score matrix to mask or bias; use a softmax kind such as "
        "'flash' for it",
        bias=bias,
        mask=mask,
        local_window_size=local_window_size,
        query_segment_ids=query_segment_ids,
        key_value_segment_ids=key_value_segment_ids,
    )
    dims = contract.check_qkv(kind, query, key, value)
    phi = resolve_feature_map(
        kind, feature_map, dims.head_dim, seq_len=max(dims.q_len, dims.kv_len), scale=scale
    )
    chunk_size = contract.static_int(kind, "chunk_size", chunk_size)
    if not isinstance(is_causal, (bool, np.bool_)):
        raise ValueError(f"{kind}: is_causal must be a Python bool; got {is_causal!r}.")
    if is_causal and dims.q_len != dims.kv_len:
        raise ValueError(
            f"{kind}: causal linear attention needs q_len == kv_len (got {dims.q_len} and "
            f"{dims.kv_len}); decode token by token with ops.linear_step instead."
        )
    q_lengths = contract.check_lengths(kind, "query_seq_lengths", query_seq_lengths, dims.batch)
    kv_lengths = contract.check_lengths(
        kind, "key_value_seq_lengths", key_value_seq_lengths, dims.batch
    )
    query, key, value = contract.zero_padding(query, key, value, q_lengths, kv_lengths)
    q_BKGTH = contract.heads_major_query(query, dims.num_kv_heads)
    k_BKSH = contract.heads_major_kv(key)
    acc = contract.accumulation_dtype(query.dtype)
    v_BKSV = contract.heads_major_kv(value).astype(acc)
    kv_valid = _positions_valid(kv_lengths, dims.kv_len)
    fq = phi(q_BKGTH, is_query=True, scale=scale, positions=jnp.arange(dims.q_len))
    kv_valid = None if kv_valid is None else kv_valid[:, None, :]
    if is_causal and phi.log_features is not None:
        fk = phi.log_features(phi.prepare(k_BKSH, scale), valid=kv_valid)
        num, den = _causal_chunkwise(fq, fk, v_BKSV, chunk_size, log_keys=True)
    else:
        fk = phi(
            k_BKSH, is_query=False, scale=scale, positions=jnp.arange(dims.kv_len), valid=kv_valid
        )
        if is_causal and phi.kernel is not None:
            pairs = (phi.prepare(q_BKGTH, scale), phi.prepare(k_BKSH, scale), kv_valid)
            num, den = _causal_chunkwise(fq, fk, v_BKSV, chunk_size, pairs=(*pairs, phi.kernel))
        elif is_causal:
            num, den = _causal_chunkwise(fq, fk, v_BKSV, chunk_size)
        else:
            num, den = _bidirectional(fq, fk, v_BKSV)
    out = normalise(num, den)
    q_valid = _positions_valid(q_lengths, dims.q_len)
    if q_valid is not None:
        out = jnp.where(q_valid[:, None, None, :, None], out, 0.0)
    return contract.seq_major_output(out).astype(query.dtype)


def resolve_feature_map(kind, feature_map_or_name, head_dim: int, *, seq_len=None, scale=None):
    """The FeatureMap for a call, checked against head_dim, the sequence length and the scale.

    `seq_len` is the longest of q_len and kv_len, or None when decoding (no length yet), in
    which case cosformer must bring its own max_len.
    """
    phi = feature_map_or_name
    if isinstance(phi, str):
        try:
            phi = feature_map(phi)
        except ValueError as error:
            raise ValueError(f"{kind}: {error}") from None
    if not isinstance(phi, FeatureMap):
        raise ValueError(
            f"{kind}: feature_map must be a name, ops.feature_map(...) or an instance of an "
            f"ops.FeatureMap subclass; got {phi!r}."
        )
    if scale is not None and not phi.scaled:
        raise ValueError(
            f"{kind}: feature map {phi.name!r} has no logit scale; leave scale=None (it applies "
            f"to maps that approximate exp, such as {SCALED})."
        )
    # Features carry sqrt(scale): a negative scale would make them NaN, and 0 weights every key
    # the same whatever q and k are. A traced scale cannot be checked here.
    if (
        scale is not None
        and not isinstance(scale, jax.core.Tracer)
        and not np.all(np.asarray(scale) > 0)
    ):
        raise ValueError(
            f"{kind}: scale must be positive for feature map {phi.name!r} (its features carry "
            f"sqrt(scale)); got {scale!r}."
        )
    return phi.for_call(kind, head_dim, seq_len)


def performer(
    query,
    key,
    value,
    bias=None,
    mask=None,
    *,
    projection: jax.Array | None = None,
    num_features: int | None = None,
    **kwargs,
):
    """Performer (FAVOR+) attention: `linear` with positive orthogonal random features.

    Args:
      query, key, value, bias, mask, **kwargs: as in `linear`.
      projection: [num_features, H] random features; default `favor_projection(key(0), ...)`,
        fixed, so calls are reproducible; pass a fresh one to redraw.
      num_features: size of the default projection (256 when neither is given); with an
        explicit projection it must match its first dimension.
    """
    if projection is None:
        num_features = DEFAULT_FAVOR_FEATURES if num_features is None else num_features
        projection = drawn_once(favor_projection, num_features, query.shape[-1])
    elif num_features is not None and num_features != jnp.shape(projection)[0]:
        raise ValueError(
            f"performer: num_features={num_features} but the projection has "
            f"{jnp.shape(projection)[0]} rows; pass one or the other."
        )
    phi = feature_map("favor", projection=projection)
    return linear(query, key, value, bias, mask, feature_map=phi, kind="performer", **kwargs)


def based(query, key, value, bias=None, mask=None, **kwargs):
    """Based's linear attention: `linear` with the 2nd-order Taylor features of exp.

    Features are 1 + H + H^2 long, so project to a small head_dim (16 in the paper) first.
    """
    return linear(query, key, value, bias, mask, feature_map="taylor", kind="based", **kwargs)


def cosformer(query, key, value, bias=None, mask=None, *, max_len: int | None = None, **kwargs):
    """cosFormer: relu features with cos re-weighting, relu(q_i).relu(k_j) cos(pi/2 (i-j)/M).

    Args:
      max_len: M; default max(T, S). Fix it when decoding so parallel and step forms agree.
    """
    phi = feature_map("cosformer", max_len=max_len)
    return linear(query, key, value, bias, mask, feature_map=phi, kind="cosformer", **kwargs)


def every_pair_pattern(q_len: int, kv_len: int, **params) -> np.ndarray:
    """Linear kinds re-weight every pair rather than dropping any: all pairs pass."""
    del params
    return np.ones((q_len, kv_len), bool)
