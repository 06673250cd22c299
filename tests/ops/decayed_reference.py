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


def delta_rule_np(q, k, v, beta, alpha, scale, xp=np):
    """o_t = scale * q_t^T S_t with S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    per kv head, read by the query heads of its group.

    q [B, T, N, Hk], k [B, T, K, Hk], v [B, T, K, Hv], beta and alpha [B, T, K].
    """
    if xp is np:
        q, k, v, beta, alpha = (np.asarray(x, np.float64) for x in (q, k, v, beta, alpha))
    B, T, N, Hk = q.shape
    K, Hv = k.shape[2], v.shape[-1]
    eye = xp.eye(Hk, dtype=q.dtype)
    state = xp.zeros((B, K, Hk, Hv), q.dtype)
    outs = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]  # [B, K, H]
        bt, at = beta[:, t, :, None, None], alpha[:, t, :, None, None]
        erase = eye - bt * kt[..., :, None] * kt[..., None, :]
        state = at * xp.einsum("bkij,bkjv->bkiv", erase, state)
        state = state + bt * kt[..., :, None] * vt[..., None, :]
        qt = q[:, t].reshape(B, K, N // K, Hk)
        outs.append(scale * xp.einsum("bkgh,bkhv->bkgv", qt, state).reshape(B, N, Hv))
    return xp.stack(outs, axis=1)
