"""Float64 NumPy attention written from the op contract, plus random inputs for the op tests.

Independent of attention_jax on purpose: the ops are judged against this, so it must not share
their code. Layout BTNH; query [B, T, N, H], key/value [B, S, K, H].
"""

import jax
import jax.numpy as jnp
import numpy as np

# The masking arguments that `random_masking` can draw, by form name.
FORMS = (
    "causal",
    "window",
    "window_int",
    "q_lengths",
    "kv_lengths",
    "segments",
    "mask",
    "mask_B1TS",
    "bias",
    "bias_1NTS",
    "bias_B1TS",
    "scale",
)


def allowed_np(
    B,
    T,
    S,
    N,
    mask=None,
    *,
    is_causal=False,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
    local_window_size=None,
    query_segment_ids=None,
    key_value_segment_ids=None,
):
    """Bool [B, N, T, S]: True where query t may attend key s (every rule ANDed)."""
    t_TS = np.arange(T)[:, None]
    s_TS = np.arange(S)[None, :]
    allowed_BNTS = np.ones((B, N, T, S), bool)
    if mask is not None:
        allowed_BNTS &= np.broadcast_to(np.asarray(mask, bool), (B, N, T, S))
    if is_causal:
        allowed_BNTS &= s_TS <= t_TS
    if local_window_size is not None:
        if isinstance(local_window_size, int):
            local_window_size = (local_window_size, local_window_size)
        left, right = local_window_size
        allowed_BNTS &= (t_TS - left <= s_TS) & (s_TS <= t_TS + right)
    if query_seq_lengths is not None:
        allowed_BNTS &= t_TS < np.asarray(query_seq_lengths)[:, None, None, None]
    if key_value_seq_lengths is not None:
        allowed_BNTS &= s_TS < np.asarray(key_value_seq_lengths)[:, None, None, None]
    if query_segment_ids is not None:
        q_seg_B1T1 = np.asarray(query_segment_ids)[:, None, :, None]
        kv_seg_B11S = np.asarray(key_value_segment_ids)[:, None, None, :]
        allowed_BNTS &= q_seg_B1T1 == kv_seg_B11S
    return allowed_BNTS


def weights_np(q, k, bias=None, mask=None, *, scale=None, **masking):
    """Float64 softmax probabilities [B, N, T, S]; rows with no allowed key are all 0."""
    q_BTNH = np.asarray(q, np.float64)
    k_BSKH = np.asarray(k, np.float64)
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    # GQA: query head n reads kv head n // (N // K).
    k_BSNH = k_BSKH[:, :, np.arange(N) // (N // K)]
    scale = 1.0 / np.sqrt(H) if scale is None else scale
    logits_BNTS = scale * np.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH)
    if bias is not None:
        logits_BNTS = logits_BNTS + np.asarray(bias, np.float64)
    allowed_BNTS = allowed_np(B, T, S, N, mask, **masking)
    logits_BNTS = np.where(allowed_BNTS, logits_BNTS, -np.inf)
    row_max_BNT1 = logits_BNTS.max(axis=-1, keepdims=True)
    # A fully masked row has max -inf; shift it by 0 so exp gives zeros, not NaN.
    row_max_BNT1 = np.where(np.isfinite(row_max_BNT1), row_max_BNT1, 0.0)
    unnorm_BNTS = np.exp(logits_BNTS - row_max_BNT1)
    total_BNT1 = unnorm_BNTS.sum(axis=-1, keepdims=True)
    return np.divide(unnorm_BNTS, total_BNT1, out=np.zeros_like(unnorm_BNTS), where=total_BNT1 > 0)


def attention_np(q, k, v, bias=None, mask=None, **kwargs):
    """Float64 attention output [B, T, N, H]; query rows with no allowed key are 0."""
    probs_BNTS = weights_np(q, k, bias, mask, **kwargs)
    v_BSKH = np.asarray(v, np.float64)
    N, K = probs_BNTS.shape[1], v_BSKH.shape[2]
    v_BSNH = v_BSKH[:, :, np.arange(N) // (N // K)]
    return np.einsum("bnts,bsnh->btnh", probs_BNTS, v_BSNH)


def valid_rows(q, k, bias=None, mask=None, *, scale=None, **masking):
    """Bool [B, T, N]: query rows that have at least one allowed key (bias and scale ignored)."""
    del bias, scale
    B, T, N, _ = q.shape
    allowed_BNTS = allowed_np(B, T, k.shape[1], N, mask, **masking)
    return allowed_BNTS.any(axis=-1).transpose(0, 2, 1)


def jax_nn_attention(
    q, k, v, bias=None, mask=None, *, query_segment_ids=None, key_value_segment_ids=None, **kwargs
):
    """jax.nn.dot_product_attention, with segment ids passed as the equivalent bool mask."""
    if query_segment_ids is not None:
        # jnp, not np: traceable, so the call can run under jit with traced segment ids.
        same_B1TS = (
            jnp.asarray(query_segment_ids)[:, None, :, None]
            == jnp.asarray(key_value_segment_ids)[:, None, None, :]
        )
        mask = same_B1TS if mask is None else jnp.logical_and(mask, same_B1TS)
    return jax.nn.dot_product_attention(
        q, k, v, bias, None if mask is None else jnp.asarray(mask), **kwargs
    )


def random_qkv(seed, B, T, S, N, K, H, dtype=jnp.float32):
    """Standard-normal query [B, T, N, H], key and value [B, S, K, H] as jax arrays."""
    rng = np.random.default_rng(seed)
    q_BTNH = rng.standard_normal((B, T, N, H))
    k_BSKH = rng.standard_normal((B, S, K, H))
    v_BSKH = rng.standard_normal((B, S, K, H))
    return tuple(jnp.asarray(x, dtype) for x in (q_BTNH, k_BSKH, v_BSKH))


def random_masking(seed, forms, B, T, S, N):
    """Keyword arguments (bias, mask, is_causal, ...) for the given form names, drawn from seed."""
    unknown = set(forms) - set(FORMS)
    assert not unknown, f"unknown forms {unknown}; choose from {FORMS}"
    rng = np.random.default_rng(seed)
    kwargs = {}
    if "causal" in forms:
        kwargs["is_causal"] = True
    if "window" in forms:
        kwargs["local_window_size"] = (3, 2)
    if "window_int" in forms:
        kwargs["local_window_size"] = 4
    if "q_lengths" in forms:
        kwargs["query_seq_lengths"] = jnp.asarray(rng.integers(1, T + 1, B), jnp.int32)
    if "kv_lengths" in forms:
        kwargs["key_value_seq_lengths"] = jnp.asarray(rng.integers(1, S + 1, B), jnp.int32)
    if "segments" in forms:
        # Packed sequences: sorted ids; a query segment absent from the keys leaves rows empty.
        kwargs["query_segment_ids"] = jnp.asarray(np.sort(rng.integers(0, 3, (B, T))), jnp.int32)
        kwargs["key_value_segment_ids"] = jnp.asarray(
            np.sort(rng.integers(0, 3, (B, S))), jnp.int32
        )
    if "mask" in forms:
        kwargs["mask"] = jnp.asarray(rng.random((B, N, T, S)) < 0.7)
    if "mask_B1TS" in forms:
        kwargs["mask"] = jnp.asarray(rng.random((B, 1, T, S)) < 0.7)
    for form, shape in (
        ("bias", (B, N, T, S)),
        ("bias_1NTS", (1, N, T, S)),
        ("bias_B1TS", (B, 1, T, S)),
    ):
        if form in forms:
            kwargs["bias"] = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    if "scale" in forms:
        kwargs["scale"] = 0.37
    return kwargs
