"""Mixture-of-experts routing as pure functions: who goes to which expert, and the aux losses.

Tokens are flattened to T = B * S; each expert takes at most C tokens (its capacity). A
routing is a dispatch tensor [T, E, C] (token t fills slot c of expert e) and combine weights of
the same shape; the sort-based expert path uses the per-choice form (expert_index, weight).

- Token choice, top-k (Switch for k=1, Fedus et al. 2021; GShard-style for k=2, Lepikhin et al.
  2020): each token picks its k most probable experts; slots are filled first choices first, in
  token order or, batch-prioritised (Riquelme et al. 2021), most confident tokens first; a
  choice past capacity is dropped and the token passes through the residual. capacity=None is
  dropless.
- Expert choice (Zhou et al. 2022): each expert picks its C most probable tokens.

Auxiliary losses are returned, never stored: the Switch load-balancing loss
E * sum_e f_e * P_e (f_e the fraction of all k choices routed to e, before capacity; P_e its
mean router probability; 1.0 when balanced) and the ST-MoE router z-loss
mean(logsumexp(logits)^2) (Zoph et al. 2022). Expert choice is balanced by construction: its
load-balancing loss is reported as 0.

Expert choice and batch-prioritised routing decide a token's experts from other tokens of its
group, later ones included, so causal models refuse them (models/config.py).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

ROUTERS = ("top_k", "expert_choice")


class Routing(NamedTuple):
    dispatch: jax.Array  # [T, E, C] 0/1: token t occupies slot c of expert e
    combine: jax.Array  # [T, E, C] the gate weight of that slot
    expert_index: jax.Array  # [T, K] chosen experts (token choice) or [E, C] tokens (expert choice)
    weight: jax.Array  # [T, K] gate weights, 0 where dropped; or [E, C] for expert choice
    stats: dict  # load_balancing_loss, z_loss, dropped_fraction (scalars), expert_load [E]


def expert_capacity(num_tokens: int, num_experts: int, k: int, factor: float | None) -> int:
    """Slots per expert: ceil(factor * T * k / E), at most T; factor None is dropless (T)."""
    if factor is None:
        return num_tokens
    if factor <= 0:
        raise ValueError(f"capacity_factor must be > 0 or None (dropless); got {factor}.")
    return max(1, min(num_tokens, math.ceil(factor * num_tokens * k / num_experts)))


def _losses(logits, probs, assigned):
    """Switch load balancing from the fraction of choices per expert, and the z-loss."""
    num_experts = logits.shape[-1]
    fraction = assigned / jnp.maximum(jnp.sum(assigned), 1.0)
    load_balancing = num_experts * jnp.sum(fraction * jnp.mean(probs, axis=0))
    z_loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2)
    return load_balancing, z_loss


def top_k_routing(
    logits: jax.Array, *, k: int, capacity: int, batch_prioritized: bool = False
) -> Routing:
    """Token-choice routing.

    Args:
      logits: router logits [T, E] (float32 advised).
      k: experts per token. Gate weights are the router probabilities, renormalised over the
        k choices when k > 1.
      capacity: C, slots per expert (`expert_capacity`).
      batch_prioritized: fill slots in order of each token's top probability, not position.
    """
    num_tokens, num_experts = logits.shape
    if not 1 <= k <= num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}] (the experts); got {k}.")
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    weight, expert_index = jax.lax.top_k(probs, k)  # [T, K]
    confidence = weight[:, 0]  # the raw top probability orders batch-prioritised routing
    if k > 1:
        weight = weight / jnp.sum(weight, axis=-1, keepdims=True)
    choice_TKE = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.int32)
    # Slot order: all first choices, then all second choices, ...; tokens in position order
    # or by confidence. The running count of earlier choices of an expert is the slot.
    order = jnp.argsort(-confidence) if batch_prioritized else jnp.arange(num_tokens)
    choice_KTE = jnp.swapaxes(choice_TKE[order], 0, 1)
    filled = jnp.cumsum(choice_KTE.reshape(k * num_tokens, num_experts), axis=0)
    slot_KTE = (filled.reshape(k, num_tokens, num_experts) - 1) * choice_KTE
    slot_TK = jnp.sum(jnp.swapaxes(slot_KTE, 0, 1), axis=-1)[jnp.argsort(order)]
    kept = slot_TK < capacity
    weight = jnp.where(kept, weight, 0.0)
    # [T, K, E] x [T, K, C] -> [T, E, C]
    place = (
        jnp.einsum("tke,tkc->tkec", choice_TKE, jax.nn.one_hot(slot_TK, capacity, dtype=jnp.int32))
        * kept[..., None, None]
    )
    dispatch = jnp.sum(place, axis=1).astype(jnp.float32)
    combine = jnp.einsum("tkec,tk->tec", place.astype(jnp.float32), weight)
    assigned = jnp.sum(choice_TKE, axis=(0, 1)).astype(jnp.float32)
    load_balancing, z_loss = _losses(logits, probs, assigned)
    stats = {
        "load_balancing_loss": load_balancing,
        "z_loss": z_loss,
        "dropped_fraction": 1.0 - jnp.mean(kept.astype(jnp.float32)),
        "expert_load": jnp.sum(dispatch, axis=(0, 2)) / (num_tokens * k),
    }
    return Routing(dispatch, combine, expert_index, weight, stats)


def expert_choice_routing(logits: jax.Array, *, capacity: int) -> Routing:
    """Expert-choice routing: expert e takes the C tokens with the highest probability for e.

    Args:
      logits: router logits [T, E].
      capacity: C, tokens per expert; T * capacity_factor / E for a balanced budget.
    """
    num_tokens, num_experts = logits.shape
    if not 1 <= capacity <= num_tokens:
        raise ValueError(f"expert-choice capacity must be in [1, {num_tokens}]; got {capacity}.")
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    weight, token_index = jax.lax.top_k(probs.T, capacity)  # [E, C]
    dispatch = jnp.transpose(jax.nn.one_hot(token_index, num_tokens), (2, 0, 1))  # [T, E, C]
    combine = dispatch * weight[None]
    chosen = jnp.sum(dispatch, axis=(1, 2))
    _, z_loss = _losses(logits, probs, jnp.sum(dispatch, axis=(0, 2)))
    stats = {
        "load_balancing_loss": jnp.zeros((), jnp.float32),
        "z_loss": z_loss,
        "dropped_fraction": jnp.mean((chosen == 0).astype(jnp.float32)),
        "expert_load": jnp.sum(dispatch, axis=(0, 2)) / jnp.maximum(jnp.sum(dispatch), 1.0),
    }
    return Routing(dispatch, combine, token_index, weight, stats)
