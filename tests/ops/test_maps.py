"""ops.attention_map: each kind's map equals the float64 reference matrix it should apply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from tests.ops import linear_reference as lref
from tests.ops import reference as ref

B, T, N, K, H = 2, 16, 4, 2, 8
LENGTHS = np.array([16, 11])
# Small patterns so that 16 tokens cross several windows, blocks and strides.
EXACT = {
    "dense": {},
    "flash": {"block_q": 4, "block_kv": 4},
    "local": {"local_window_size": (3, 2)},
    "block_sparse": {
        "block_size": 4,
        "layout": np.eye(4, dtype=bool) | np.eye(4, k=-1, dtype=bool),
    },
    "longformer": {"local_window_size": (2, 2), "global_positions": (0, 9)},
    "bigbird": {"block_size": 4, "num_random_blocks": 1, "seed": 3},
    "strided": {"stride": 4},
}


def _qk(seed):
    q, k, _ = lref.random_inputs(seed, B, T, T, N, K, H)
    return q, k


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", sorted(EXACT))
def test_exact_kinds_give_softmax_probabilities_on_their_pattern(kind, is_causal):
    q, k = _qk(0)
    params = EXACT[kind]
    pattern_params = dict(params, is_causal=is_causal, num_heads=N) if kind == "bigbird" else params
    pattern = ops.pattern_mask(kind, T, T, **pattern_params)
    lengths = None if kind == "strided" else LENGTHS  # strided refuses lengths
    got = ops.attention_map(
        kind,
        jnp.float32(q),
        jnp.float32(k),
        is_causal=is_causal,
        key_value_seq_lengths=lengths,
        **params,
    )
    want = ref.weights_np(
        q, k, mask=pattern[None, None], is_causal=is_causal, key_value_seq_lengths=lengths
    )
    assert got.shape == (B, N, T, T)
    np.testing.assert_allclose(got, want, atol=2e-6)


PROJECTION = ops.favor_projection(jax.random.key(7), 32, H)
KERNELIZED = {
    "linear": ({}, lambda x, pos: lref.elu_np(x)),
    "based": ({}, lambda x, pos: lref.taylor_np(x)),
    "performer": ({"projection": PROJECTION}, lambda x, pos: lref.favor_np(x, PROJECTION)),
    "cosformer": ({"max_len": 20}, lambda x, pos: lref.cosformer_np(x, 20, pos)),
}


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", sorted(KERNELIZED))
def test_kernelized_kinds_give_their_normalised_kernel_matrix(kind, is_causal):
    q, k = _qk(1)
    params, phi = KERNELIZED[kind]
    got = ops.attention_map(
        kind,
        jnp.float32(q),
        jnp.float32(k),
        is_causal=is_causal,
        key_value_seq_lengths=LENGTHS,
        **params,
    )

    def features(x):  # [B, L, heads, H] -> [B, L, heads, F], positions along L
        x_BNLH = np.swapaxes(x, 1, 2)
        return np.swapaxes(phi(x_BNLH, np.arange(x.shape[1])), 1, 2)

    a_BNTS = np.einsum("btnf,bsnf->bnts", features(q), features(k)[:, :, np.arange(N) // (N // K)])
    keep = np.arange(T)[None, None, None, :] < LENGTHS[:, None, None, None]
    if is_causal:
        keep = keep & (np.arange(T)[None, :] <= np.arange(T)[:, None])
    a_BNTS = np.where(keep, a_BNTS, 0.0)
    total = a_BNTS.sum(-1, keepdims=True)
    want = np.divide(a_BNTS, total, out=np.zeros_like(a_BNTS), where=total > 0)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_linformer_gives_its_map_over_input_positions():
    q, k = _qk(2)
    E, F = (np.asarray(ops.linformer_projection(jax.random.key(s), 6, T)) for s in (0, 1))
    got = ops.attention_map(
        "linformer", jnp.float32(q), jnp.float32(k), key_projection=E, value_projection=F
    )
    one_hot = np.broadcast_to(np.eye(T)[None, :, None, :], (B, T, K, T))
    want = np.swapaxes(lref.linformer_np(q, k, one_hot, E, F), 1, 2)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # The map reproduces the output: out = A v.
    v = jax.random.normal(jax.random.key(3), (B, T, K, H))
    out = ops.linformer(jnp.float32(q), jnp.float32(k), v, key_projection=E, value_projection=F)
    v_BNSH = np.swapaxes(np.asarray(v)[:, :, np.arange(N) // (N // K)], 1, 2)
    np.testing.assert_allclose(
        np.swapaxes(np.einsum("bnts,bnsh->bnth", got, v_BNSH), 1, 2), out, atol=2e-5
    )


def test_unknown_kind_lists_the_kinds():
    q, k = _qk(0)
    with pytest.raises(ValueError, match="performer"):
        ops.attention_map("nope", jnp.float32(q), jnp.float32(k))
