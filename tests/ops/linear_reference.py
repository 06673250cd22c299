"""Float64 NumPy references for the kernelized ("linear") kinds and Linformer, from the math.

Independent of attention_jax on purpose: the linear ops are judged against these, so they must
not share their code. The references build the explicit [T, S] kernel matrix
A = phi(Q) phi(K)^T per head (the quadratic form the ops avoid) and normalise its rows.
Layout BTNH; query [B, T, N, H], key/value [B, S, K, H|Hv]; GQA maps query head n to kv head
n // (N // K).

Feature maps take arrays [..., L, H] (sequence on axis -2 when positions matter) and return
[..., L, F]. They default to float64 NumPy; `xp=jax.numpy` gives the same formula in JAX (no
casts) for differentiating the quadratic form with `linear_attention_jnp`.
"""

import jax.numpy as jnp
import numpy as np


def _arr(x, xp):
    return np.asarray(x, np.float64) if xp is np else x


def elu_np(x, xp=np):
    """elu(x) + 1: x + 1 for x > 0, exp(x) otherwise."""
    x = _arr(x, xp)
    return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, 0.0)))


def relu_np(x, xp=np):
    return xp.maximum(_arr(x, xp), 0.0)


def _scaled(x, scale, xp):
    """x * sqrt(scale), scale defaulting to 1/sqrt(H)."""
    x = _arr(x, xp)
    scale = x.shape[-1] ** -0.5 if scale is None else scale
    return x * float(scale) ** 0.5


def favor_np(x, projection, scale=None, xp=np):
    """FAVOR+ positive random features exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x sqrt(scale).

    E_w[phi(q).phi(k)] = exp(q.k * scale) for rows w ~ N(0, I).
    """
    x = _scaled(x, scale, xp)
    w_MH = _arr(projection, xp)
    m = w_MH.shape[0]
    return xp.exp(x @ w_MH.T - 0.5 * xp.sum(x * x, axis=-1, keepdims=True)) / float(m) ** 0.5


def taylor_np(x, scale=None, xp=np):
    """[1, x', vec(x' x'^T) / sqrt(2)], so phi(q).phi(k) = 1 + s + s^2 / 2 with s = q.k scale."""
    x = _scaled(x, scale, xp)
    outer = xp.einsum("...i,...j->...ij", x, x).reshape(*x.shape[:-1], -1) / 2.0**0.5
    return xp.concatenate([xp.ones((*x.shape[:-1], 1), x.dtype), x, outer], axis=-1)


def cosformer_np(x, max_len, positions=None, xp=np):
    """[relu(x) cos(pi/2 i/M), relu(x) sin(pi/2 i/M)] for position i (default: index on axis -2).

    phi(q_i).phi(k_j) = relu(q_i).relu(k_j) cos(pi/2 (i - j) / M).
    """
    x = _arr(x, xp)
    if positions is None:
        positions = np.arange(x.shape[-2])
    angle = np.pi / 2 * np.asarray(positions, np.float64) / max_len
    r = relu_np(x, xp)
    return xp.concatenate([r * np.cos(angle)[..., None], r * np.sin(angle)[..., None]], axis=-1)


def seq_features(phi, x_BTNH, xp=np):
    """phi applied to [B, T, N, H] with the sequence on axis -2 (as cosformer needs): [B,T,N,F]."""
    return xp.swapaxes(phi(xp.swapaxes(_arr(x_BTNH, xp), 1, 2)), 1, 2)


def _keep_BNTS(B, N, T, S, is_causal, key_value_seq_lengths):
    """Bool [B, N, T, S]: key s is not padding and (causal) s <= t."""
    keep = np.ones((B, N, T, S), bool)
    if key_value_seq_lengths is not None:
        lengths = np.asarray(key_value_seq_lengths)
        keep &= np.arange(S)[None, None, None, :] < lengths[:, None, None, None]
    if is_causal:
        keep &= np.arange(S)[None, :] <= np.arange(T)[:, None]
    return keep


def _q_valid_BT(B, T, query_seq_lengths):
    if query_seq_lengths is None:
        return np.ones((B, T), bool)
    return np.arange(T)[None, :] < np.asarray(query_seq_lengths)[:, None]


def _quadratic_parts(q, k, v, phi_q, phi_k, is_causal, key_value_seq_lengths, xp):
    """Masked kernel matrix A [B, N, T, S] and values expanded to query heads [B, S, N, Hv]."""
    fq_BTNF = seq_features(phi_q, q, xp)
    fk_BSKF = seq_features(phi_k, k, xp)
    B, T, N, _ = fq_BTNF.shape
    S, K = fk_BSKF.shape[1], fk_BSKF.shape[2]
    heads = np.arange(N) // (N // K)
    a_BNTS = xp.einsum("btnf,bsnf->bnts", fq_BTNF, fk_BSKF[:, :, heads])
    a_BNTS = xp.where(_keep_BNTS(B, N, T, S, is_causal, key_value_seq_lengths), a_BNTS, 0.0)
    return a_BNTS, _arr(v, xp)[:, :, heads]


def linear_attention_np(
    q,
    k,
    v,
    phi_q,
    phi_k=None,
    is_causal=False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
):
    """Float64 kernelized attention [B, T, N, Hv] in the quadratic form.

    out_t = sum_s A_ts v_s / sum_s A_ts with A the masked kernel matrix; 0 where the row sum is
    0 and on query rows t >= query length. phi_q / phi_k map [..., L, H] -> [..., L, F]
    (phi_k defaults to phi_q).
    """
    phi_k = phi_q if phi_k is None else phi_k
    a_BNTS, v_BSNV = _quadratic_parts(q, k, v, phi_q, phi_k, is_causal, key_value_seq_lengths, np)
    num_BTNV = np.einsum("bnts,bsnv->btnv", a_BNTS, v_BSNV)
    den_BTN1 = a_BNTS.sum(-1).transpose(0, 2, 1)[..., None]
    out = np.divide(num_BTNV, den_BTN1, out=np.zeros_like(num_BTNV), where=den_BTN1 != 0)
    B, T = out.shape[:2]
    return np.where(_q_valid_BT(B, T, query_seq_lengths)[:, :, None, None], out, 0.0)


def linear_attention_jnp(
    q,
    k,
    v,
    phi_q,
    phi_k=None,
    is_causal=False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
):
    """`linear_attention_np` transcribed to jax.numpy (same dtype as the inputs), for jax.grad.

    phi_q / phi_k must be JAX feature maps (the *_np functions with xp=jax.numpy).
    """
    phi_k = phi_q if phi_k is None else phi_k
    a_BNTS, v_BSNV = _quadratic_parts(q, k, v, phi_q, phi_k, is_causal, key_value_seq_lengths, jnp)
    num_BTNV = jnp.einsum("bnts,bsnv->btnv", a_BNTS, v_BSNV)
    den_BTN1 = a_BNTS.sum(-1).transpose(0, 2, 1)[..., None]
    nonzero = den_BTN1 != 0
    out = jnp.where(nonzero, num_BTNV / jnp.where(nonzero, den_BTN1, 1.0), 0.0)
    B, T = out.shape[:2]
    return jnp.where(_q_valid_BT(B, T, query_seq_lengths)[:, :, None, None], out, 0.0)


def linformer_np(
    q,
    k,
    v,
    key_projection,
    value_projection=None,
    *,
    scale=None,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
):
    """Float64 Linformer: softmax(Q (E K)^T scale) (F V) per head, padded keys/values zeroed
    before the projections E, F [k, S] (F defaults to E); query rows past the length are 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    E = np.asarray(key_projection, np.float64)
    F = E if value_projection is None else np.asarray(value_projection, np.float64)
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    if key_value_seq_lengths is not None:
        valid = np.arange(S)[None, :] < np.asarray(key_value_seq_lengths)[:, None]
        k = np.where(valid[:, :, None, None], k, 0.0)
        v = np.where(valid[:, :, None, None], v, 0.0)
    heads = np.arange(N) // (N // K)
    pk_BPNH = np.einsum("ps,bskh->bpkh", E, k)[:, :, heads]
    pv_BPNV = np.einsum("ps,bskv->bpkv", F, v)[:, :, heads]
    scale = H**-0.5 if scale is None else scale
    logits_BNTP = scale * np.einsum("btnh,bpnh->bntp", q, pk_BPNH)
    p = np.exp(logits_BNTP - logits_BNTP.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bntp,bpnv->btnv", p, pv_BPNV)
    return np.where(_q_valid_BT(B, T, query_seq_lengths)[:, :, None, None], out, 0.0)


def random_inputs(seed, B, T, S, N, K, H, Hv=None, scale=1.0):
    """Float64 NumPy query [B, T, N, H] and key [B, S, K, H] ~ N(0, scale^2), value
    [B, S, K, Hv] ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    Hv = H if Hv is None else Hv
    return (
        scale * rng.standard_normal((B, T, N, H)),
        scale * rng.standard_normal((B, S, K, H)),
        rng.standard_normal((B, S, K, Hv)),
    )
