"""Token-by-token recurrences of the decaying linear attentions, written from their formulas:
float64 NumPy by default, or jax.numpy (`xp=jnp`) to differentiate. Independent of
attention_jax on purpose."""

import numpy as np


def decayed_np(q, k, v, multiplier, scale, xp=np):
    """o_t = scale * q_t^T S_t with S_t = diag(multiplier_t) S_{t-1} + k_t v_t^T per query head.

    q [B, T, N, Hk], k [B, T, K, Hk], v [B, T, K, Hv], multiplier [B, T, N, Hk] (the decay of
    each query head's state at step t); query head n reads kv head n // (N // K).
    """
    if xp is np:
        q, k, v, multiplier = (np.asarray(x, np.float64) for x in (q, k, v, multiplier))
    B, T, N, Hk = q.shape
    K, Hv = k.shape[2], v.shape[-1]
    kv_head = np.arange(N) // (N // K)
    k, v = k[:, :, kv_head], v[:, :, kv_head]  # [B, T, N, .]
    state = xp.zeros((B, N, Hk, Hv), q.dtype)
    outs = []
    for t in range(T):
        state = multiplier[:, t, :, :, None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * xp.einsum("bnh,bnhv->bnv", q[:, t], state))
    return xp.stack(outs, axis=1)


def retnet_multiplier(gamma, B, T, Hk, xp=np):
    """gamma [N] as a per-step multiplier [B, T, N, Hk]."""
    return xp.broadcast_to(gamma[None, None, :, None], (B, T, gamma.shape[0], Hk))


def gla_multiplier(log_decay, N, xp=np):
    """log_decay [B, T, K, Hk] as [B, T, N, Hk]: each query head takes its kv head's gate."""
    K = log_decay.shape[2]
    return xp.exp(log_decay[:, :, np.arange(N) // (N // K)])


def mamba2_multiplier(log_decay, N, Hk, xp=np):
    """log_decay [B, T, K] as [B, T, N, Hk]."""
    g = gla_multiplier(log_decay[..., None], N, xp)
    return xp.broadcast_to(g, (*g.shape[:3], Hk))
