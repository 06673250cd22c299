"""Token-by-token decoding of the state-carrying kinds, with the same gate arguments as their ops.

Each kind's record holds one `init` (batch, num_heads, num_kv_heads, head_dim, value_dim) and one
`step` (state, q, k, v, *, scale, **gates) from here, so a layer decodes every such kind
through the record: the gates of the new tokens go in exactly as the op takes them for a whole
sequence (`log_decay` [B, T, K, Hk] or [B, T, K], `beta` [B, T, K], retnet's `decay` [N]).
The work per token is O(1) in the position: one [Hk, Hv] state update per head.
"""

from __future__ import annotations

import jax.numpy as jnp

from attention_jax.ops import contract
from attention_jax.ops.decayed_linear import DecayState, decay_state_init, decay_step
from attention_jax.ops.delta_rule import DeltaState, delta_state_init, delta_step
from attention_jax.ops.recurrent_contract import check_output_scale
from attention_jax.ops.retnet import retnet_decays


def shared_decay_init(batch, num_heads, num_kv_heads, head_dim, value_dim) -> DecayState:
    """The state of gla and mamba2: one [Hk, Hv] matrix per kv head."""
    return decay_state_init(batch, num_kv_heads, head_dim, value_dim)


def retnet_init(batch, num_heads, num_kv_heads, head_dim, value_dim) -> DecayState:
    """RetNet's state: one matrix per query head, since each query head decays at its own rate."""
    return decay_state_init(
        batch, num_kv_heads, head_dim, value_dim, decay_groups=num_heads // num_kv_heads
    )


def delta_init(batch, num_heads, num_kv_heads, head_dim, value_dim) -> DeltaState:
    """The delta rule's state: one [Hk, Hv] matrix per kv head."""
    return delta_state_init(batch, num_kv_heads, head_dim, value_dim)


def _scale(kind, scale, query):
    return check_output_scale(kind, scale, query.shape[-1])


def retnet_step(state: DecayState, query, key, value, *, decay=None, scale=None):
    """`ops.retnet` one token at a time: decay [N] as the op takes it (default RetNet's)."""
    K = state.kv.shape[1]
    G = query.shape[2] // K
    gamma = jnp.asarray(retnet_decays(query.shape[2]) if decay is None else decay)
    log_gamma = jnp.log(gamma.astype(state.kv.dtype)).reshape(1, K, G, 1, 1)
    log_decay = jnp.broadcast_to(log_gamma, (1, K, G, query.shape[1], 1))
    return decay_step(state, query, key, value, log_decay, scale=_scale("retnet", scale, query))


def gla_step(state: DecayState, query, key, value, *, log_decay, scale=None):
    """`ops.gla` one token at a time: log_decay [B, T, K, Hk]."""
    g = contract.heads_major_kv(log_decay)[:, :, None]  # [B, K, 1, T, Hk]
    return decay_step(state, query, key, value, g, scale=_scale("gla", scale, query))


def mamba2_step(state: DecayState, query, key, value, *, log_decay, scale=None):
    """`ops.mamba2` one token at a time: log_decay [B, T, K]."""
    a = jnp.swapaxes(log_decay, 1, 2)[:, :, None, :, None]  # [B, K, 1, T, 1]
    return decay_step(state, query, key, value, a, scale=_scale("mamba2", scale, query))


def deltanet_step(state: DeltaState, query, key, value, *, beta, scale=None):
    """`ops.deltanet` one token at a time: beta [B, T, K]."""
    return delta_step(state, query, key, value, beta, scale=_scale("deltanet", scale, query))


def gated_deltanet_step(state: DeltaState, query, key, value, *, beta, log_decay, scale=None):
    """`ops.gated_deltanet` one token at a time: beta and log_decay [B, T, K]."""
    scale = _scale("gated_deltanet", scale, query)
    return delta_step(state, query, key, value, beta, log_decay, scale=scale)
