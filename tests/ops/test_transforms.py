"""The exact-softmax ops under jit, vmap, grad, pmap and shard_map (8 host CPU devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from attention_jax import ops

from .reference import attention_np, random_masking, random_qkv

# Transformed and plain calls may fuse differently, so they agree to float32 rounding only.
F32_TOL = dict(atol=2e-5, rtol=2e-5)
GRAD_TOL = dict(atol=5e-5, rtol=5e-5)

KINDS = [
    pytest.param("dense", {}, id="dense"),
    pytest.param("flash", dict(block_q=8, block_kv=8), id="flash-8x8"),
]

# (B, T, S, N, K, H): B = 4 splits over 4 devices, N = 8 and K = 4 over 4 head shards.
SHAPE = (4, 21, 29, 8, 4, 16)
B, T, S, N, K, H = SHAPE
# Array-valued masking arguments, passed through the transforms as traced values.
ARRAY_FORMS = ("bias", "mask_B1TS", "q_lengths", "kv_lengths", "segments")
ARRAY_NAMES = (
    "bias",
    "mask",
    "query_seq_lengths",
    "key_value_seq_lengths",
    "query_segment_ids",
    "key_value_segment_ids",
)


def make_op(kind, kind_kw):
    """The op as f(q, k, v, *arrays) with static masking fixed and arrays in ARRAY_NAMES order."""
    op = ops.get(kind)

    def f(q, k, v, *arrays):
        return op(
            q,
            k,
            v,
            is_causal=True,
            local_window_size=(6, 2),
            **dict(zip(ARRAY_NAMES, arrays, strict=True)),
            **kind_kw,
        )

    return f


def draw_args(seed=0):
    """q, k, v and the array masking arguments, in make_op's positional order."""
    kwargs = random_masking(seed + 1, ARRAY_FORMS, B, T, S, N)
    return (*random_qkv(seed, *SHAPE), *(kwargs[name] for name in ARRAY_NAMES))


def loss_grads(f, args, ct):
    """d/dq, d/dk, d/dv, d/dbias of sum(f(*args) * ct)."""
    return jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2, 3))(*args)


def assert_trees_close(actual, expected, tol):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, **tol), actual, expected)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_jit(kind, kind_kw):
    """jit with traced lengths, segment ids, mask and bias equals eager and the reference."""
    f = make_op(kind, kind_kw)
    args = draw_args()
    out = jax.jit(f)(*args)
    np.testing.assert_allclose(out, f(*args), **F32_TOL)
    expected = attention_np(
        *args[:3],
        is_causal=True,
        local_window_size=(6, 2),
        **dict(zip(ARRAY_NAMES, args[3:], strict=True)),
    )
    np.testing.assert_allclose(out, expected, **F32_TOL)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_vmap_over_extra_leading_axis(kind, kind_kw):
    """vmap over a leading axis V of every argument equals a loop over V."""
    f = make_op(kind, kind_kw)
    per_v = [draw_args(seed) for seed in range(3)]
    stacked = [jnp.stack(column) for column in zip(*per_v, strict=True)]
    out_VBTNH = jax.vmap(f)(*stacked)
    np.testing.assert_allclose(out_VBTNH, jnp.stack([f(*args) for args in per_v]), **F32_TOL)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_vmap_queries_only(kind, kind_kw):
    """vmap over query alone, key/value and the rest shared, equals a loop."""
    f = make_op(kind, kind_kw)
    args = draw_args()
    q_VBTNH = jnp.stack([args[0], -args[0], 2 * args[0]])
    out_VBTNH = jax.vmap(f, in_axes=(0,) + (None,) * (len(args) - 1))(q_VBTNH, *args[1:])
    np.testing.assert_allclose(out_VBTNH, jnp.stack([f(q, *args[1:]) for q in q_VBTNH]), **F32_TOL)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_grad_under_jit(kind, kind_kw):
    """jit(grad) equals grad run eagerly, for query, key, value and bias."""
    f = make_op(kind, kind_kw)
    args = draw_args()
    ct = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, N, H)), jnp.float32)
    grad_fn = functools.partial(loss_grads, f)
    assert_trees_close(jax.jit(grad_fn)(args, ct), grad_fn(args, ct), GRAD_TOL)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_pmap_over_batch(kind, kind_kw):
    """pmap of one batch element per device on 4 devices equals the single-device call."""
    f = make_op(kind, kind_kw)
    args = draw_args()
    # [B, ...] -> [4 devices, B // 4, ...]
    split = [x.reshape(4, x.shape[0] // 4, *x.shape[1:]) for x in args]
    out = jax.pmap(f, devices=jax.devices()[:4])(*split)
    np.testing.assert_allclose(out.reshape(B, T, N, H), f(*args), **F32_TOL)


def _batch_mesh():
    return Mesh(np.array(jax.devices()[:4]), ("data",))


def _batch_head_mesh():
    return Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "heads"))


# Partition specs in make_op's positional order: q, k, v, bias, mask, lengths, segment ids.
BATCH_SPECS = (P("data"),) * (3 + len(ARRAY_NAMES))
BATCH_HEAD_SPECS = (
    P("data", None, "heads"),
    P("data", None, "heads"),
    P("data", None, "heads"),
    P("data", "heads"),
    P("data"),
    P("data"),
    P("data"),
    P("data"),
    P("data"),
)


@pytest.mark.parametrize(
    "mesh_fn, in_specs, out_spec",
    [
        pytest.param(_batch_mesh, BATCH_SPECS, P("data"), id="batch"),
        pytest.param(
            _batch_head_mesh, BATCH_HEAD_SPECS, P("data", None, "heads"), id="batch+heads"
        ),
    ],
)
@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_shard_map(kind, kind_kw, mesh_fn, in_specs, out_spec):
    """shard_map over batch (and heads, keeping GQA groups whole) equals the unsharded call."""
    f = make_op(kind, kind_kw)
    args = draw_args()
    sharded = jax.jit(jax.shard_map(f, mesh=mesh_fn(), in_specs=in_specs, out_specs=out_spec))
    np.testing.assert_allclose(sharded(*args), f(*args), **F32_TOL)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
def test_grad_through_shard_map(kind, kind_kw):
    """Gradients through a batch- and head-sharded shard_map equal the unsharded gradients."""
    f = make_op(kind, kind_kw)
    args = draw_args()
    ct = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, N, H)), jnp.float32)
    sharded = jax.shard_map(
        f, mesh=_batch_head_mesh(), in_specs=BATCH_HEAD_SPECS, out_specs=P("data", None, "heads")
    )
    assert_trees_close(
        jax.jit(functools.partial(loss_grads, sharded))(args, ct), loss_grads(f, args, ct), GRAD_TOL
    )
