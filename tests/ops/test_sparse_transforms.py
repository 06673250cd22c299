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

# Blocks of 4 give 8 blocks: with blocks of 8 the window and global block leave one candidate
# per row, so the random draw, and every per-head layout, would be the same.
BIGBIRD = dict(block_size=4, num_window_blocks=3, num_global_blocks=1, num_random_blocks=1, seed=0)

# Case id -> (kind, params). Shared cases have one pattern for every head.
SHARED_CASES = {
    "local": ("local", dict(local_window_size=(5, 2), block_q=8, block_kv=8)),
    "block_sparse": ("block_sparse", dict(layout=LAYOUT, block_size=BLOCK)),
    "longformer": (
        "longformer",
        dict(local_window_size=(4, 4), global_positions=[0, 17], block_q=8, block_kv=8),
    ),
    "strided-strided": ("strided", dict(stride=5, pattern="strided", block_size=BLOCK)),
    "strided-fixed": ("strided", dict(stride=6, pattern="fixed", summary_size=2)),
    "bigbird": ("bigbird", BIGBIRD),
}
# One layout per global head, so a head shard would need the layouts of its own heads only.
PER_HEAD_CASES = {
    "block_sparse-per-head": ("block_sparse", dict(layout=LAYOUT_PER_HEAD, block_size=BLOCK)),
    "bigbird-per-head": ("bigbird", dict(BIGBIRD, per_head=True)),
}
CASES = {**SHARED_CASES, **PER_HEAD_CASES}

ALL_CASES = pytest.mark.parametrize("case", list(CASES))
CAUSAL = pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])


def make_op(case, is_causal):
    """The op as f(q, k, v, query_seq_lengths, key_value_seq_lengths)."""
    kind, params = CASES[case]
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


def pattern(case, is_causal):
    """pattern_mask for the case: bool [T, S], or [N, T, S] for a per-head layout."""
    kind, params = CASES[case]
    extra = dict(is_causal=is_causal, num_heads=N) if kind == "bigbird" else {}
    return ops.pattern_mask(kind, T, S, **params, **extra)


def make_reference(case, is_causal):
    """ops.dense with the case's pattern as mask, in make_op's calling convention."""
    pattern_TS = pattern(case, is_causal)
    mask = jnp.asarray(pattern_TS[None] if pattern_TS.ndim == 3 else pattern_TS[None, None])

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
    """q, k, v and int32 [B] query and key lengths; batch row 2 has no keys at all."""
    rng = np.random.default_rng(seed + 100)
    q_lengths = np.array([T, *rng.integers(1, T + 1, B - 1)])
    kv_lengths = np.array([S, *rng.integers(1, S + 1, B - 1)])
    kv_lengths[2] = 0
    return (
        *random_qkv(seed, *SHAPE),
        jnp.asarray(q_lengths, jnp.int32),
        jnp.asarray(kv_lengths, jnp.int32),
    )


@functools.cache
def plain(case, is_causal):
    """The untransformed (eager) call on draw_args(), computed once per process."""
    return make_op(case, is_causal)(*draw_args())


def cotangent(seed=3):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, N, H)), jnp.float32)


def loss_grads(f, args, ct):
    """d/dq, d/dk, d/dv of sum(f(*args) * ct)."""
    return jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2))(*args)


def assert_trees_close(actual, expected, tol):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, **tol), actual, expected)


@pytest.mark.parametrize("case", list(PER_HEAD_CASES))
def test_per_head_cases_differ_between_heads(case):
    """The per-head parameters really give different patterns per head."""
    for is_causal in (False, True):
        pattern_NTS = pattern(case, is_causal)
        assert pattern_NTS.shape == (N, T, S)
        assert len({p.tobytes() for p in pattern_NTS}) > 1


@CAUSAL
@ALL_CASES
def test_plain_equals_dense_with_pattern(case, is_causal):
    """The plain call equals dense with pattern_mask; a row with no keys gives 0, not NaN."""
    out = plain(case, is_causal)
    expected = jax.jit(make_reference(case, is_causal))(*draw_args())
    np.testing.assert_allclose(out, expected, **F32_TOL)
    assert np.isfinite(out).all()
    # Batch row 2 has key length 0: every query row in it is fully masked.
    np.testing.assert_array_equal(out[2], 0.0)


@CAUSAL
@ALL_CASES
def test_jit(case, is_causal):
    """jit with traced lengths equals the plain call."""
    out = jax.jit(make_op(case, is_causal))(*draw_args())
    np.testing.assert_allclose(out, plain(case, is_causal), **F32_TOL)


@CAUSAL
@ALL_CASES
def test_vmap_over_extra_leading_axis(case, is_causal):
    """vmap over a leading axis of two stacked problems equals the plain call on each."""
    args = draw_args()
    # The second problem is the first with its batch reversed, so its plain call is the first's
    # reversed (batch rows are independent, and test_plain_equals_dense_with_pattern checks it).
    stacked = [jnp.stack([x, x[::-1]]) for x in args]
    out_VBTNH = jax.jit(jax.vmap(make_op(case, is_causal)))(*stacked)
    out = plain(case, is_causal)
    np.testing.assert_allclose(out_VBTNH, jnp.stack([out, out[::-1]]), **F32_TOL)


@CAUSAL
@ALL_CASES
def test_grad_under_jit_equals_dense_with_pattern(case, is_causal):
    """jit(grad) for query, key and value equals dense with pattern_mask's; no NaN anywhere."""
    args = draw_args()
    ct = cotangent()
    got = jax.jit(functools.partial(loss_grads, make_op(case, is_causal)))(args, ct)
    for g in got:
        assert np.isfinite(g).all()
    # Batch row 2 (no keys) passes no gradient to its queries, keys or values.
    assert_trees_close(tuple(g[2] for g in got), (0.0, 0.0, 0.0), dict(atol=0, rtol=0))
    reference = jax.jit(functools.partial(loss_grads, make_reference(case, is_causal)))
    assert_trees_close(got, reference(args, ct), GRAD_TOL)


@CAUSAL
@ALL_CASES
def test_pmap_over_batch(case, is_causal):
    """pmap of one batch element per device on 4 devices equals the single-device call."""
    # [B, ...] -> [4 devices, B // 4, ...]
    split = [x.reshape(4, x.shape[0] // 4, *x.shape[1:]) for x in draw_args()]
    out = jax.pmap(make_op(case, is_causal), devices=jax.devices()[:4])(*split)
    np.testing.assert_allclose(out.reshape(B, T, N, H), plain(case, is_causal), **F32_TOL)


# Partition specs in make_op's positional order: q, k, v split over heads, lengths replicated.
HEAD_SPECS = (
    P(None, None, "heads", None),
    P(None, None, "heads", None),
    P(None, None, "heads", None),
    P(),
    P(),
)


@CAUSAL
@pytest.mark.parametrize("case", list(SHARED_CASES))
def test_shard_map_over_heads(case, is_causal):
    """shard_map over 4 head shards (GQA groups kept whole) equals the unsharded call."""
    mesh = Mesh(np.array(jax.devices()[:4]), ("heads",))
    sharded = jax.jit(
        jax.shard_map(
            make_op(case, is_causal),
            mesh=mesh,
            in_specs=HEAD_SPECS,
            out_specs=P(None, None, "heads", None),
        )
    )
    np.testing.assert_allclose(sharded(*draw_args()), plain(case, is_causal), **F32_TOL)
