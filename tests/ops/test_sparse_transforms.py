"""The sparse kinds under jit, vmap, grad, pmap and shard_map (8 host CPU devices).

Each transformed call equals the plain call, and the plain call equals `ops.dense` with the
kind's `ops.pattern_mask`, under causal masking and traced query and key lengths.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from attention_jax import ops

from .reference import random_qkv

# Transformed and plain calls may fuse differently, so they agree to float32 rounding only.
F32_TOL = dict(atol=2e-5, rtol=2e-5)
GRAD_TOL = dict(atol=5e-5, rtol=5e-5)

# (B, T, S, N, K, H): self-attention (strided needs T == S); B = 4 splits over 4 devices, and
# N = 8, K = 4 over 4 head shards keep each GQA group on one device.
SHAPE = (4, 29, 29, 8, 4, 16)
B, T, S, N, K, H = SHAPE
BLOCK = 8
NUM_BLOCKS = -(-T // BLOCK)

_LAYOUT_RNG = np.random.default_rng(7)
LAYOUT = _LAYOUT_RNG.random((NUM_BLOCKS, NUM_BLOCKS)) < 0.5
LAYOUT_PER_HEAD = _LAYOUT_RNG.random((N, NUM_BLOCKS, NUM_BLOCKS)) < 0.5

BIGBIRD = dict(
    block_size=BLOCK, num_window_blocks=3, num_global_blocks=1, num_random_blocks=1, seed=0
)

# Kinds whose pattern is the same for every head, so they can be split over heads.
SHARED_KINDS = [
    pytest.param("local", dict(local_window_size=(5, 2), block_q=8, block_kv=8), id="local"),
    pytest.param("block_sparse", dict(layout=LAYOUT, block_size=BLOCK), id="block_sparse"),
    pytest.param(
        "longformer",
        dict(local_window_size=(4, 4), global_positions=[0, 17], block_q=8, block_kv=8),
        id="longformer",
    ),
    pytest.param(
        "strided", dict(stride=5, pattern="strided", block_size=BLOCK), id="strided-strided"
    ),
    pytest.param("strided", dict(stride=6, pattern="fixed", summary_size=2), id="strided-fixed"),
    pytest.param("bigbird", BIGBIRD, id="bigbird"),
]
# One layout per global head: a head shard would see the wrong heads' layouts.
PER_HEAD_KINDS = [
    pytest.param(
        "block_sparse", dict(layout=LAYOUT_PER_HEAD, block_size=BLOCK), id="block_sparse-per-head"
    ),
    pytest.param("bigbird", dict(BIGBIRD, per_head=True), id="bigbird-per-head"),
]
KINDS = SHARED_KINDS + PER_HEAD_KINDS
CAUSAL = pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])


def make_op(kind, params, is_causal):
    """The op as f(q, k, v, query_seq_lengths, key_value_seq_lengths)."""
    op = ops.get(kind)

    def f(q, k, v, q_lengths, kv_lengths):
        return op(
            q,
            k,
            v,
            is_causal=is_causal,
            query_seq_lengths=q_lengths,
            key_value_seq_lengths=kv_lengths,
            **params,
        )

    return f


def make_reference(kind, params, is_causal):
    """ops.dense with the kind's pattern as mask, in make_op's calling convention."""
    extra = dict(is_causal=is_causal, num_heads=N) if kind == "bigbird" else {}
    pattern = ops.pattern_mask(kind, T, S, **params, **extra)
    mask = jnp.asarray(pattern[None] if pattern.ndim == 3 else pattern[None, None])

    def f(q, k, v, q_lengths, kv_lengths):
        return ops.dense(
            q,
            k,
            v,
            mask=mask,
            is_causal=is_causal,
            query_seq_lengths=q_lengths,
            key_value_seq_lengths=kv_lengths,
        )

    return f


def draw_args(seed=0):
    """q, k, v and int32 [B] query and key lengths; row 2 has no keys at all."""
    rng = np.random.default_rng(seed + 100)
    q_lengths = np.array([T, *rng.integers(1, T + 1, B - 1)])
    kv_lengths = np.array([S, *rng.integers(1, S + 1, B - 1)])
    kv_lengths[2] = 0
    return (
        *random_qkv(seed, *SHAPE),
        jnp.asarray(q_lengths, jnp.int32),
        jnp.asarray(kv_lengths, jnp.int32),
    )


def cotangent(seed=3):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, N, H)), jnp.float32)


def loss_grads(f, args, ct):
    """d/dq, d/dk, d/dv of sum(f(*args) * ct)."""
    return jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2))(*args)


def assert_trees_close(actual, expected, tol):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, **tol), actual, expected)


@CAUSAL
@pytest.mark.parametrize("kind, params", KINDS)
def test_plain_equals_dense_with_pattern(kind, params, is_causal):
    """The plain call equals dense with pattern_mask; no NaN where a row has no keys."""
    f = make_op(kind, params, is_causal)
    args = draw_args()
    out = f(*args)
    np.testing.assert_allclose(out, make_reference(kind, params, is_causal)(*args), **F32_TOL)
    assert np.isfinite(out).all()
    # Batch row 2 has key length 0: every query row in it is fully masked, so its output is 0.
    np.testing.assert_array_equal(out[2], 0.0)
    grads = loss_grads(f, args, cotangent())
    for g in grads:
        assert np.isfinite(g).all()
    assert_trees_close(tuple(g[2] for g in grads), (0.0, 0.0, 0.0), dict(atol=0, rtol=0))


@CAUSAL
@pytest.mark.parametrize("kind, params", KINDS)
def test_jit(kind, params, is_causal):
    """jit with traced lengths equals the plain call."""
    f = make_op(kind, params, is_causal)
    args = draw_args()
    np.testing.assert_allclose(jax.jit(f)(*args), f(*args), **F32_TOL)


@CAUSAL
@pytest.mark.parametrize("kind, params", KINDS)
def test_vmap_over_extra_leading_axis(kind, params, is_causal):
    """vmap over a leading axis of two stacked problems equals calling on each."""
    f = make_op(kind, params, is_causal)
    per_v = [draw_args(seed) for seed in range(2)]
    stacked = [jnp.stack(column) for column in zip(*per_v, strict=True)]
    out_VBTNH = jax.vmap(f)(*stacked)
    np.testing.assert_allclose(out_VBTNH, jnp.stack([f(*args) for args in per_v]), **F32_TOL)


@CAUSAL
@pytest.mark.parametrize("kind, params", KINDS)
def test_grad_under_jit_equals_dense_with_pattern(kind, params, is_causal):
    """jit(grad) for query, key and value equals the gradient of dense with pattern_mask."""
    f = make_op(kind, params, is_causal)
    args = draw_args()
    ct = cotangent()
    got = jax.jit(functools.partial(loss_grads, f))(args, ct)
    assert_trees_close(got, loss_grads(make_reference(kind, params, is_causal), args, ct), GRAD_TOL)


@CAUSAL
@pytest.mark.parametrize("kind, params", KINDS)
def test_pmap_over_batch(kind, params, is_causal):
    """pmap of one batch element per device on 4 devices equals the single-device call."""
    f = make_op(kind, params, is_causal)
    args = draw_args()
    # [B, ...] -> [4 devices, B // 4, ...]
    split = [x.reshape(4, x.shape[0] // 4, *x.shape[1:]) for x in args]
    out = jax.pmap(f, devices=jax.devices()[:4])(*split)
    np.testing.assert_allclose(out.reshape(B, T, N, H), f(*args), **F32_TOL)


# Partition specs in make_op's positional order: q, k, v split over heads, lengths replicated.
HEAD_SPECS = (
    P(None, None, "heads", None),
    P(None, None, "heads", None),
    P(None, None, "heads", None),
    P(),
    P(),
)


@CAUSAL
@pytest.mark.parametrize("kind, params", SHARED_KINDS)
def test_shard_map_over_heads(kind, params, is_causal):
    """shard_map over 4 head shards (GQA groups kept whole) equals the unsharded call."""
    f = make_op(kind, params, is_causal)
    args = draw_args()
    mesh = Mesh(np.array(jax.devices()[:4]), ("heads",))
    sharded = jax.jit(
        jax.shard_map(f, mesh=mesh, in_specs=HEAD_SPECS, out_specs=P(None, None, "heads", None))
    )
    np.testing.assert_allclose(sharded(*args), f(*args), **F32_TOL)
