"""MoBA against `dense` masked to the blocks an independent NumPy selection picks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import count_flops

from .reference import random_qkv

TOL = dict(atol=2e-5, rtol=2e-5)


def selected_pairs_np(q, k, *, block_size, top_k, is_causal, kv_lengths=None):
    """Bool [B, N, T, S]: the keys of each query's chosen blocks, selected in float64 loops.

    The gate is q . (mean of the block's keys before the example's length); a query always
    takes its own block, never one past the length and, causally, never a later one; ties go to
    the lowest block index; fewer eligible blocks than top_k means fewer blocks.
    """
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    B, T, N, _ = q.shape
    S, K = k.shape[1], k.shape[2]
    num_blocks = -(-S // block_size)
    pairs = np.zeros((B, N, T, S), bool)
    for b in range(B):
        length = S if kv_lengths is None else int(kv_lengths[b])
        for n in range(N):
            keys = k[b, :length, n // (N // K)]
            means = np.stack(
                [
                    keys[j * block_size : (j + 1) * block_size].mean(0)
                    if j * block_size < length
                    else np.zeros(keys.shape[1])
                    for j in range(num_blocks)
                ]
            )
            for i in range(T):
                gate = means @ q[b, i, n]
                gate[block_size * np.arange(num_blocks) >= length] = -np.inf
                if is_causal:
                    gate[block_size * np.arange(num_blocks) > i] = -np.inf
                gate[min(i // block_size, num_blocks - 1)] = np.inf
                for j in np.argsort(-gate, kind="stable")[:top_k]:
                    if gate[j] > -np.inf:
                        pairs[b, n, i, j * block_size : min((j + 1) * block_size, length)] = True
    return pairs


def _value_and_grads(fn, q, k, v, cotangent):
    out, pullback = jax.vjp(fn, q, k, v)
    return out, pullback(cotangent)


CASES = [
    # (B, T, S, N, K, H), block_size, top_k, is_causal
    pytest.param((2, 100, 100, 4, 2, 16), 16, 3, True, id="causal-gqa-partial-block"),
    pytest.param((1, 70, 90, 2, 1, 8), 20, 2, False, id="bidirectional-mqa-T<S"),
    pytest.param((1, 90, 60, 2, 2, 8), 16, 2, True, id="causal-T>S"),
    pytest.param((1, 64, 64, 2, 2, 8), 8, 8, True, id="every-block-is-causal-dense"),
    pytest.param((2, 48, 48, 2, 1, 8), 8, 2, True, id="causal-lengths"),
    pytest.param((2, 40, 56, 2, 2, 8), 8, 3, False, id="bidirectional-lengths"),
]


@pytest.mark.parametrize("shape, block_size, top_k, is_causal", CASES)
def test_equals_dense_over_the_selected_blocks(shape, block_size, top_k, is_causal, request):
    B, T, S, N, K, H = shape
    q, k, v = random_qkv(0, B, T, S, N, K, H)
    params = dict(block_size=block_size, top_k=top_k, is_causal=is_causal)
    if "lengths" in request.node.callspec.id:
        kv_lengths = jnp.asarray([S - 11, S], jnp.int32)
        lengths = dict(query_seq_lengths=jnp.asarray([T, T - 7]), key_value_seq_lengths=kv_lengths)
    else:
        kv_lengths, lengths = None, {}
    pairs = selected_pairs_np(q, k, kv_lengths=kv_lengths, **params)
    params |= lengths
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, N, H)), jnp.float32)
    got = jax.jit(
        lambda q, k, v: _value_and_grads(functools.partial(ops.moba, **params), q, k, v, cotangent)
    )(q, k, v)
    want = _value_and_grads(
        lambda q, k, v: ops.dense(q, k, v, mask=jnp.asarray(pairs), is_causal=is_causal, **lengths),
        q,
        k,
        v,
        cotangent,
    )
    np.testing.assert_allclose(got[0], want[0], **TOL)
    for name, g, w in zip("qkv", got[1], want[1]):
        np.testing.assert_allclose(g, w, **TOL, err_msg=f"d{name}")


def test_every_block_is_exactly_causal_attention():
    q, k, v = random_qkv(2, 1, 48, 48, 2, 1, 8)
    got = ops.moba(q, k, v, block_size=16, top_k=3, is_causal=True)
    np.testing.assert_allclose(got, ops.dense(q, k, v, is_causal=True), **TOL)


def test_ties_go_to_the_lowest_block():
    """Zero queries score every block 0: each takes its own block and the lowest other one."""
    _, k, v = random_qkv(3, 1, 32, 32, 1, 1, 4)
    q = jnp.zeros((1, 32, 1, 4))
    out = ops.moba(q, k, v, block_size=8, top_k=2)
    block_means = v[0, :, 0].reshape(4, 8, 4).mean(axis=1)
    chosen = {0: (0, 1), 1: (0, 1), 2: (0, 2), 3: (0, 3)}
    want = jnp.stack([(block_means[a] + block_means[b]) / 2 for a, b in chosen.values()])
    np.testing.assert_allclose(out[0, :, 0], jnp.repeat(want, 8, axis=0), **TOL)


def test_bfloat16_close_to_float32():
    q, k, v = random_qkv(4, 1, 128, 128, 2, 2, 16)
    want = ops.moba(q, k, v, block_size=32, top_k=2, is_causal=True)
    low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    got = ops.moba(*low, block_size=32, top_k=2, is_causal=True)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(top_k=5), r"top_k \(5\) is larger than the number of key blocks \(4"),
        (dict(block_size=0), "block_size must be a positive integer"),
        (dict(top_k=0), "top_k must be a positive integer"),
        (dict(mask=jnp.ones((1, 1, 32, 32), bool)), "mask is not supported"),
        (dict(query_segment_ids=jnp.zeros((1, 32), int)), "query_segment_ids is not supported"),
        (dict(is_causal=jnp.array(True)), "is_causal must be a Python bool"),
    ],
)
def test_bad_input_names_the_argument(overrides, message):
    q, k, v = random_qkv(5, 1, 32, 32, 1, 1, 4)
    with pytest.raises(ValueError, match=message):
        ops.moba(q, k, v, **({"block_size": 8, "top_k": 2} | overrides))


def test_cost_follows_the_chosen_blocks():
    """Counted forward FLOPs at 32K (block 512, top-3, causal, 8 heads of 64): at most 0.15x
    causal dense; doubling n doubles them (exponent <= 1.2 over 4K..64K)."""

    def counted(kind, n, **params):
        x = jax.ShapeDtypeStruct((1, n, 8, 64), jnp.float32)
        return count_flops(functools.partial(ops.get(kind), is_causal=True, **params), x, x, x)

    moba = {n: counted("moba", n, block_size=512, top_k=3) for n in (4096, 65536)}
    # Causal dense computes the whole square; the causal half is what flash computes.
    causal_half = counted("dense", 32768) / 2
    assert counted("moba", 32768, block_size=512, top_k=3) <= 0.15 * causal_half
    assert np.log(moba[65536] / moba[4096]) / np.log(16) <= 1.2


def test_attention_map_is_softmax_over_the_selected_pairs():
    q, k, _ = random_qkv(6, 1, 40, 40, 2, 1, 8)
    params = dict(block_size=8, top_k=2, is_causal=True)
    pairs = jnp.asarray(selected_pairs_np(q, k, **params))
    got = ops.attention_map("moba", q, k, **params)
    _, want = ops.dense(q, k, k, mask=pairs, is_causal=True, return_weights=True)
    np.testing.assert_allclose(got, want, **TOL)
    assert not np.asarray(got)[~np.asarray(pairs & np.tri(40, dtype=bool))].any()
