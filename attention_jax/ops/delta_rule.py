"""The delta rule, gated or not: the engine behind deltanet and gated_deltanet.

Per kv head, with no normaliser:

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        o_t = scale * q_t^T S_t

Each token writes v_t at key k_t with strength beta_t, first removing what the state held
there; alpha_t = exp(g_t) <= 1 decays the state (1 for DeltaNet, Yang et al. 2024; a gate for
Gated DeltaNet, Yang et al. 2025).

The chunkwise form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule
over Sequence Length") writes S_t = alpha_t S_{t-1} + k_t u_t^T with the pseudo-values
u_t = beta_t (v_t - alpha_t S_{t-1}^T k_t). Inside a chunk that starts from S_0 they solve one
unit lower-triangular C x C system,

    (I + tril(diag(beta) (K K^T * Gamma), -1)) U = diag(beta) (V - diag(exp(b)) K S_0),

with b the cumulative log decay inside the chunk and Gamma_ij = exp(b_i - b_j) <= 1 (the UT
transform of the WY representation). Then O = diag(exp(b)) Q S_0 + (tril(Q K^T) * Gamma) U and
S_C = exp(b_C) S_0 + (K * exp(b_C - b))^T U, and `lax.scan` carries S from chunk to chunk: time
O(T C (C + H)), memory O(T C), no [T, S] array.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attention_jax.ops import contract, recurrent_contract
from attention_jax.ops.carry import chunks_leading, varying_like
from attention_jax.ops.decayed_linear import check_log_decay

DEFAULT_CHUNK = 32


@dataclasses.dataclass(frozen=True)
class DeltaState:
    """Decoding state of the delta rule: kv [B, K, Hk, Hv] and position [B] (tokens seen)."""

    kv: jax.Array
    position: jax.Array


jax.tree_util.register_dataclass(DeltaState, data_fields=["kv", "position"], meta_fields=[])


def delta_state_init(
    batch: int, num_kv_heads: int, head_dim: int, value_dim: int, dtype=jnp.float32
) -> DeltaState:
    """An empty state: kv [batch, num_kv_heads, head_dim, value_dim] of zeros."""
    shape = (batch, num_kv_heads, head_dim, value_dim)
    return DeltaState(jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))


def delta_step(
    state: DeltaState, query, key, value, beta, log_decay=None, *, scale
) -> tuple[jax.Array, DeltaState]:
    """Feeds T new tokens through the recurrence, one at a time.

    Args:
      state: from `delta_state_init` or a previous step.
      query: [B, T, N, Hk]; key: [B, T, K, Hk]; value: [B, T, K, Hv].
      beta: [B, T, K] write strengths; log_decay: [B, T, K] or None (no decay).
      scale: the output scale.

    Returns:
      ([B, T, N, Hv] in the query dtype, the advanced state).
    """
    acc = state.kv.dtype
    B, K = state.kv.shape[:2]
    q_TBKGH = jnp.moveaxis(contract.heads_major_query(query, K).astype(acc), 3, 0)
    k_TBKH = jnp.moveaxis(contract.heads_major_kv(key).astype(acc), 2, 0)
    v_TBKV = jnp.moveaxis(contract.heads_major_kv(value).astype(acc), 2, 0)
    beta_TBK = jnp.moveaxis(beta.astype(acc), 1, 0)
    g = jnp.zeros_like(beta) if log_decay is None else log_decay
    g_TBK = jnp.moveaxis(g.astype(acc), 1, 0)

    def one(kv_BKHV, xs):
        q_BKGH, k_BKH, v_BKV, beta_BK, g_BK = xs
        kv_BKHV = kv_BKHV * jnp.exp(g_BK)[..., None, None]
        read_BKV = jnp.einsum("bkh,bkhv->bkv", k_BKH, kv_BKHV)
        written_BKV = beta_BK[..., None] * (v_BKV - read_BKV)
        kv_BKHV = kv_BKHV + k_BKH[..., :, None] * written_BKV[..., None, :]
        return kv_BKHV, scale * jnp.einsum("bkgh,bkhv->bkgv", q_BKGH, kv_BKHV)

    kv, out_TBKGV = lax.scan(one, state.kv, (q_TBKGH, k_TBKH, v_TBKV, beta_TBK, g_TBK))
    out = jnp.moveaxis(out_TBKGV, 0, 3)  # [B, K, G, T, Hv]
    T = query.shape[1]
    return contract.seq_major_output(out).astype(query.dtype), DeltaState(kv, state.position + T)


def _chunkwise(q_BKGTH, k_BKTH, v_BKTV, beta_BKT, g_BKT, chunk: int, scale) -> jax.Array:
    """The causal outputs [B, K, G, T, Hv] of the (gated) delta rule, chunk by chunk; g_BKT
    None is no decay (DeltaNet), which skips the decay arithmetic."""
    B, K, G, T, Hk = q_BKGTH.shape
    Hv = v_BKTV.shape[-1]
    chunk = min(chunk, T)
    pad = -T % chunk

    # Padded tokens write nothing (beta = 0) and decay nothing; they come after every real one.
    xs = (
        chunks_leading(q_BKGTH, 3, chunk),
        chunks_leading(k_BKTH, 2, chunk),
        chunks_leading(v_BKTV, 2, chunk),
        chunks_leading(beta_BKT, 2, chunk),
    )
    if g_BKT is not None:
        xs += (chunks_leading(g_BKT, 2, chunk),)
    causal_CC = jnp.tril(jnp.ones((chunk, chunk), bool))
    earlier_CC = jnp.tril(jnp.ones((chunk, chunk), bool), -1)
    eye_CC = jnp.eye(chunk, dtype=q_BKGTH.dtype)

    def one_chunk(kv_BKHV, xs):
        q_BKGCH, k_BKCH, v_BKCV, beta_BKC, *g = xs
        if g:
            b_BKC = jnp.cumsum(g[0], axis=-1)
            between = b_BKC[..., :, None] - b_BKC[..., None, :]
            gamma_BKCC = jnp.exp(jnp.where(causal_CC, between, -jnp.inf))
            decay_BKC1, last_BK1 = jnp.exp(b_BKC)[..., None], b_BKC[..., -1:]
        else:
            gamma_BKCC, decay_BKC1, last_BK1 = causal_CC.astype(kv_BKHV.dtype), 1.0, None
        kk_BKCC = jnp.einsum("bkih,bkjh->bkij", k_BKCH, k_BKCH)
        system = eye_CC + jnp.where(earlier_CC, beta_BKC[..., None] * kk_BKCC * gamma_BKCC, 0.0)
        read_BKCV = decay_BKC1 * jnp.einsum("bkch,bkhv->bkcv", k_BKCH, kv_BKHV)
        rhs_BKCV = beta_BKC[..., None] * (v_BKCV - read_BKCV)
        u_BKCV = lax.linalg.triangular_solve(
            system, rhs_BKCV, left_side=True, lower=True, unit_diagonal=True
        )
        scores = jnp.einsum("bkgih,bkjh->bkgij", q_BKGCH, k_BKCH) * gamma_BKCC[..., None, :, :]
        out = jnp.einsum("bkgij,bkjv->bkgiv", scores, u_BKCV)
        from_state = jnp.einsum("bkgch,bkhv->bkgcv", q_BKGCH, kv_BKHV)
        out = out + (from_state if last_BK1 is None else decay_BKC1[:, :, None] * from_state)
        if last_BK1 is not None:
            k_BKCH = k_BKCH * jnp.exp(last_BK1 - b_BKC)[..., None]
            kv_BKHV = jnp.exp(last_BK1)[..., None] * kv_BKHV
        kv_BKHV = kv_BKHV + jnp.einsum("bkch,bkcv->bkhv", k_BKCH, u_BKCV)
        return kv_BKHV, scale * out

    init = jnp.zeros((B, K, Hk, Hv), q_BKGTH.dtype)
    _, out = lax.scan(one_chunk, varying_like(init, *xs), xs)
    # [chunks, B, K, G, C, Hv] -> [B, K, G, T, Hv]
    return jnp.moveaxis(out, 0, 3).reshape(B, K, G, T + pad, Hv)[:, :, :, :T]


def check_beta(kind: str, beta, want: tuple[int, ...]) -> jax.Array:
    """A float write-strength array of shape `want`, in [0, 1] when concrete."""
    beta = jnp.asarray(beta)
    if beta.shape != want or not jnp.issubdtype(beta.dtype, jnp.floating):
        raise ValueError(
            f"{kind}: beta must be a float array of shape {list(want)}; got shape {beta.shape} "
            f"and dtype {beta.dtype}."
        )
    values = contract.concrete_values(beta)
    if values is not None and np.any((values < 0) | (values > 1)):
        raise ValueError(
            f"{kind}: beta must lie in [0, 1] (the layer takes a sigmoid); got values in "
            f"[{float(np.min(values))}, {float(np.max(values))}]."
        )
    return beta


def delta_rule_attention(kind: str, query, key, value, beta, log_decay=None, **arguments):
    """The op contract around `_chunkwise`.

    Args:
      kind: the name used in error messages.
      query, key, value: [B, T, N, Hk], [B, T, K, Hk], [B, T, K, Hv].
      beta: [B, T, K] in [0, 1]; log_decay: [B, T, K] <= 0, or None for no decay.
      arguments: chunk_size and the contract's (`recurrent_contract.prepare`).
    """
    call = recurrent_contract.prepare(kind, query, key, value, **arguments)
    dims, acc = call.dims, call.q_BKGTH.dtype
    want = (dims.batch, dims.kv_len, dims.num_kv_heads)
    # Past its length a sequence's state is frozen: its padding neither writes nor decays.
    beta = call.frozen_past_length(check_beta(kind, beta, want).astype(acc))
    g = None
    if log_decay is not None:
        g = check_log_decay(kind, "log_decay", log_decay, want).astype(acc)
        g = call.frozen_past_length(g).transpose(0, 2, 1)
    out = _chunkwise(
        call.q_BKGTH, call.k_BKTH, call.v_BKTV, beta.transpose(0, 2, 1), g, call.chunk, call.scale
    )
    return call.output(out)
