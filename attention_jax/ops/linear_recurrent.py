"""Recurrent decoding for kernelized attention: O(1) work and memory per generated token.

The causal form of `linear` is a recurrence over the state S = sum_j phi(k_j) v_j^T and the
normaliser z = sum_j phi(k_j): token t adds its key, then reads with its query, so stepping
through a sequence equals the parallel causal form. FAVOR+ keys (those of any map with
`log_features`) are stabilised by a running maximum (the state is rescaled when it grows, as in
an online softmax), which the parallel form's per-sequence maximum matches exactly because the
constant cancels.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from attention_jax.ops.linear import normalise, resolve_feature_map


@dataclasses.dataclass(frozen=True)
class LinearState:
    """Decoding state of kernelized attention, per kv head.

    Attributes:
      kv: [B, K, F, Hv] sum of phi(k) v^T (times exp(-key_shift) for log-feature maps: favor).
      normaliser: [B, K, F] sum of phi(k) (same scaling).
      position: [B] int32, tokens seen so far (cosformer's positions).
      key_shift: [B, K] running max of the key log-features of a map with `log_features`
        (favor; -inf before the first token; unused by the other maps).
    """

    kv: jax.Array
    normaliser: jax.Array
    position: jax.Array
    key_shift: jax.Array


jax.tree_util.register_dataclass(
    LinearState, data_fields=["kv", "normaliser", "position", "key_shift"], meta_fields=[]
)


def linear_state_init(
    batch: int,
    num_heads: int,
    head_dim: int,
    *,
    feature_map="elu",
    value_dim: int | None = None,
    dtype=jnp.float32,
) -> LinearState:
    """An empty decoding state for `num_heads` kv heads (pass num_kv_heads under GQA).

    Args:
      batch: B.
      num_heads: kv heads K the keys and values come with.
      head_dim: H of queries and keys.
      feature_map: as in `linear`.
      value_dim: Hv, default head_dim.
      dtype: state dtype; float32 (or wider) whatever the activations are.
    """
    phi = resolve_feature_map("linear_state_init", feature_map, head_dim)
    features = phi.num_features(head_dim)
    value_dim = head_dim if value_dim is None else value_dim
    return LinearState(
        kv=jnp.zeros((batch, num_heads, features, value_dim), dtype),
        normaliser=jnp.zeros((batch, num_heads, features), dtype),
        position=jnp.zeros((batch,), jnp.int32),
        key_shift=jnp.full((batch, num_heads), -jnp.inf, dtype),
    )


def linear_step(
    state: LinearState,
    q_t: jax.Array,
    k_t: jax.Array,
    v_t: jax.Array,
    *,
    feature_map="elu",
    scale=None,
) -> tuple[jax.Array, LinearState]:
    """Attends one new token to everything so far (itself included); returns (out, new state).

    Args:
      state: from `linear_state_init` or a previous step.
      q_t: [B, N, H], N a multiple of the state's K.
      k_t: [B, K, H].
      v_t: [B, K, Hv].
      feature_map, scale: as in `linear` (the same values as the parallel form being matched).

    Returns:
      out [B, N, Hv] in q_t's dtype, and the state after this token.
    """
    B, K, F, Hv = state.kv.shape
    N, H = q_t.shape[1], q_t.shape[2]
    if k_t.shape != (B, K, H) or v_t.shape != (B, K, Hv) or q_t.shape[0] != B or N % K:
        raise ValueError(
            f"linear_step: expected q_t [{B}, N, {H}] with N % {K} == 0, k_t [{B}, {K}, {H}] and "
            f"v_t [{B}, {K}, {Hv}] to match the state; got {q_t.shape}, {k_t.shape}, "
            f"{v_t.shape}."
        )
    phi = resolve_feature_map("linear_step", feature_map, H, scale=scale)
    if phi.num_features(H) != F:
        raise ValueError(
            f"linear_step: feature map {phi.name!r} gives {phi.num_features(H)} features but "
            f"the state holds {F}; build the state with the same feature map."
        )
    acc = state.kv.dtype
    positions = state.position[:, None]  # [B, 1], broadcast over heads
    kv, normaliser, key_shift = state.kv, state.normaliser, state.key_shift
    if phi.log_features is not None:
        log_fk = phi.log_features(phi.prepare(k_t, scale))
        new_shift = jnp.maximum(key_shift, jax.lax.stop_gradient(log_fk.max(-1)))
        rescale = jnp.exp(key_shift - new_shift)  # exp(-inf) = 0 on the first token
        kv = kv * rescale[..., None, None]
        normaliser = normaliser * rescale[..., None]
        fk = jnp.exp(log_fk - new_shift[..., None])
        key_shift = new_shift
    else:
        fk = phi(k_t[:, :, None], is_query=False, scale=scale, positions=positions[..., None])[
            :, :, 0
        ]
    kv = kv + fk[..., :, None] * v_t.astype(acc)[..., None, :]
    normaliser = normaliser + fk
    q_BKGH = q_t.reshape(B, K, N // K, H)
    fq = phi(
        q_BKGH[..., None, :], is_query=True, scale=scale, positions=positions[..., None, None]
    )[..., 0, :]
    num = jnp.einsum("bkgf,bkfv->bkgv", fq, kv)
    den = jnp.einsum("bkgf,bkf->bkg", fq, normaliser)
    out = normalise(num, den).reshape(B, N, Hv)
    new_state = LinearState(kv, normaliser, state.position + 1, key_shift)
    return out.astype(q_t.dtype), new_state
