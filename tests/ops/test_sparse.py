"""local and block_sparse against dense with their pattern_mask, plus the cost they skip."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_jax import ops
from attention_jax.bench import count_flops, fit_exponent

from .reference import attention_np, random_qkv

F32_TOL = dict(atol=2e-5, rtol=2e-5)
BF16_TOL = dict(atol=2e-2, rtol=2e-2)
# Every new shape compiles afresh, so keep the example count modest.
SETTINGS = settings(max_examples=12, deadline=None)
# Each example is a new program, so compiling dominates its time: no LLVM optimisation of the
# machine code (XLA's passes on the program still run; what it computes is the same up to
# rounding), which about halves the compile. Every kind is also checked against dense at the
# default level, at fixed shapes, in test_sparse_transforms.
FAST_COMPILE = dict(compiler_options={"xla_backend_optimization_level": 0})


@st.composite
def problems(draw):
    """A random shape, masking and sparse-kind parameters."""
    B = draw(st.integers(1, 2))
    T, S = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    N, K = draw(st.sampled_from([(4, 4), (4, 2), (4, 1)]))
    masking = dict(is_causal=draw(st.booleans()))
    if draw(st.booleans()):
        masking["key_value_seq_lengths"] = jnp.asarray(
            draw(st.lists(st.integers(0, S), min_size=B, max_size=B)), jnp.int32
        )
    if draw(st.booleans()):
        masking["query_seq_lengths"] = jnp.asarray(
            draw(st.lists(st.integers(0, T), min_size=B, max_size=B)), jnp.int32
        )
    return (B, T, S, N, K, 8), masking, draw(st.integers(0, 2**31 - 1))


def _local_params(draw_seed, T, S):
    rng = np.random.default_rng(draw_seed)
    left, right = (int(x) for x in rng.integers(0, 12, 2))
    block = int(rng.choice([4, 8, 16]))
    return dict(local_window_size=(left, right), block_q=block, block_kv=int(rng.choice([4, 8])))


def _block_sparse_params(draw_seed, T, S):
    rng = np.random.default_rng(draw_seed)
    block = int(rng.choice([4, 8, 16]))
    shape = (-(-T // block), -(-S // block))
    return dict(layout=rng.random(shape) < 0.5, block_size=block)


def _longformer_params(draw_seed, T, S):
    params = _local_params(draw_seed, T, S)
    rng = np.random.default_rng(draw_seed + 1)
    params["global_positions"] = [int(p) for p in rng.integers(0, min(T, S), rng.integers(0, 3))]
    return params


def _strided_params(draw_seed, T, S):
    rng = np.random.default_rng(draw_seed)
    stride = int(rng.integers(1, 9))
    pattern = str(rng.choice(["strided", "fixed"]))
    return dict(
        stride=stride,
        pattern=pattern,
        summary_size=int(rng.integers(1, stride + 1)),
        block_size=int(rng.choice([4, 8])),
    )


def _bigbird_params(draw_seed, T, S):
    rng = np.random.default_rng(draw_seed)
    return dict(
        block_size=int(rng.choice([2, 4, 8])),
        num_window_blocks=int(rng.choice([1, 3])),
        num_global_blocks=int(rng.integers(0, 3)),
        num_random_blocks=int(rng.integers(0, 3)),
        seed=int(rng.integers(0, 100)),
        per_head=bool(rng.integers(0, 2)),
    )


PARAMS = {
    "local": _local_params,
    "block_sparse": _block_sparse_params,
    "longformer": _longformer_params,
    "strided": _strided_params,
    "bigbird": _bigbird_params,
}
KINDS = list(PARAMS)
# The Sparse Transformer patterns are defined for self-attention only.
SELF_ATTENTION_ONLY = {"strided"}


def _pattern(kind, T, S, N, params, masking):
    """pattern_mask for the op's params, as a dense-op mask [1, 1|N, T, S]."""
    extra = {}
    if kind == "bigbird":
        extra = dict(is_causal=masking["is_causal"], num_heads=N)
    pattern = ops.pattern_mask(kind, T, S, **params, **extra)
    assert pattern.shape[-2:] == (T, S) and pattern.dtype == bool
    return pattern[None] if pattern.ndim == 3 else pattern[None, None]


def _check(kind, shape, masking, seed, dtype, tol):
    B, T, S, N, K, H = shape
    if kind in SELF_ATTENTION_ONLY:
        S = T
        shape = (B, T, S, N, K, H)
        if "key_value_seq_lengths" in masking:
            masking["key_value_seq_lengths"] = jnp.minimum(masking["key_value_seq_lengths"], T)
    params = PARAMS[kind](seed, T, S)
    q, k, v = random_qkv(seed % 1000, *shape, dtype=dtype)
    pattern = _pattern(kind, T, S, N, params, masking)
    op = ops.get(kind)
    is_causal = masking["is_causal"]
    lengths = {name: x for name, x in masking.items() if name != "is_causal"}

    def sparse(q, k, v, lengths):
        return op(q, k, v, **params, is_causal=is_causal, **lengths)

    def dense(q, k, v, lengths, mask):
        return ops.dense(q, k, v, mask=mask, is_causal=is_causal, **lengths)

    # Each example has its own shape and static parameters, so it compiles afresh whatever is
    # done; one program for everything (op and dense, outputs and gradients) compiles once,
    # where eager calls would dispatch, and compile, op by op. Lengths stay traced arguments.
    # test_sparse_transforms checks that jit equals the eager call for every kind.
    @functools.partial(jax.jit, **FAST_COMPILE)
    def run(q, k, v, lengths, mask, ct):
        if ct is None:
            return sparse(q, k, v, lengths), dense(q, k, v, lengths, mask), (), ()
        # d/dq, d/dk, d/dv of sum(out * ct): the vjp with cotangent ct.
        out, sparse_vjp = jax.vjp(lambda q, k, v: sparse(q, k, v, lengths), q, k, v)
        want, dense_vjp = jax.vjp(lambda q, k, v: dense(q, k, v, lengths, mask), q, k, v)
        return out, want, sparse_vjp(ct), dense_vjp(ct)

    ct = None
    if dtype == jnp.float32:
        # NumPy draws: jax.random would compile a sampler for every new shape.
        ct = jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, N, H)), jnp.float32)
    out, want, got, ref = run(q, k, v, lengths, jnp.asarray(pattern), ct)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32), **tol)
    np.testing.assert_allclose(
        np.asarray(out, np.float64), attention_np(q, k, v, mask=pattern, **masking), **tol
    )
    assert len(got) == (3 if dtype == jnp.float32 else 0)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(problem=problems())
def test_equals_dense_with_pattern_mask_float32(kind, problem):
    """Output and gradients equal dense with pattern_mask, under causal and length masks."""
    _check(kind, *problem, jnp.float32, F32_TOL)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=4, deadline=None)
@given(problem=problems())
def test_equals_dense_with_pattern_mask_bfloat16(kind, problem):
    _check(kind, *problem, jnp.bfloat16, BF16_TOL)


def test_one_block_per_row_is_softmax_over_that_block():
    """A layout with one block per query block: attention restricted to that block, by hand."""
    B, T, N, H, block = 1, 12, 1, 4, 4
    q, k, v = (np.asarray(x, np.float64) for x in random_qkv(3, B, T, T, N, N, H))
    layout = np.zeros((3, 3), bool)
    layout[0, 2] = layout[1, 0] = layout[2, 1] = True
    out = np.asarray(
        ops.block_sparse(
            *(jnp.asarray(x, jnp.float32) for x in (q, k, v)), layout=layout, block_size=block
        )
    )
    for qb, kb in zip(*np.nonzero(layout), strict=True):
        rows, cols = slice(qb * block, qb * block + block), slice(kb * block, kb * block + block)
        logits = q[0, rows, 0] @ k[0, cols, 0].T / np.sqrt(H)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(out[0, rows, 0], p @ v[0, cols, 0], atol=2e-6, rtol=2e-5)


@pytest.mark.parametrize("kind", ["dense", "flash"])
def test_exact_kinds_let_everything_through(kind):
    assert ops.pattern_mask(kind, 3, 5).all()
    assert ops.pattern_mask("flash", 3, 5, block_q=2).shape == (3, 5)


def test_pattern_mask_refuses_mask_arguments_it_would_not_describe():
    """A window on flash is a mask argument, not part of its pattern: passing it is an error."""
    with pytest.raises(TypeError, match="local_window_size"):
        ops.pattern_mask("flash", 3, 5, local_window_size=(1, 1))
    with pytest.raises(ValueError, match="unknown attention kind"):
        ops.pattern_mask("nope", 3, 5)


def test_local_flops_grow_linearly_and_skip_most_blocks():
    """Counted FLOPs of local (window 256) fit n^p with p <= 1.1; at 16K they are <= 1/16 dense."""
    ns = [1024, 2048, 4096, 8192, 16384]

    def flops(op, n):
        x = jax.ShapeDtypeStruct((1, n, 8, 64), jnp.float32)
        return count_flops(op, x, x, x)

    local = [flops(lambda q, k, v: ops.local(q, k, v, local_window_size=(256, 0)), n) for n in ns]
    assert fit_exponent(ns, local) <= 1.1
    assert local[-1] <= flops(ops.dense, ns[-1]) / 16


def test_longformer_flops_grow_linearly_with_a_global_token():
    """One global token adds a full row and column of blocks: still O(n) work."""
    ns = [1024, 2048, 4096, 8192]

    def longformer(q, k, v):
        return ops.longformer(q, k, v, local_window_size=(128, 128), global_positions=[0])

    def flops(n):
        x = jax.ShapeDtypeStruct((1, n, 8, 64), jnp.float32)
        return count_flops(longformer, x, x, x)

    assert fit_exponent(ns, [flops(n) for n in ns]) <= 1.1


def test_block_sparse_flops_are_proportional_to_active_blocks():
    x = jnp.zeros((1, 256, 2, 16))
    layout = np.eye(8, dtype=bool)

    def flops(layout):
        return count_flops(
            lambda q, k, v: ops.block_sparse(q, k, v, layout=layout, block_size=32), x, x, x
        )

    full = flops(np.ones((8, 8), bool))
    assert flops(layout) == pytest.approx(full / 8, rel=0.02)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(lambda q: ops.local(q, q, q), "local_window_size", id="local-no-window"),
        pytest.param(
            lambda q: ops.local(q, q, q, local_window_size=-1),
            "local_window_size",
            id="local-negative-window",
        ),
        pytest.param(lambda q: ops.block_sparse(q, q, q), "layout", id="no-layout"),
        pytest.param(
            lambda q: ops.longformer(q, q, q, global_positions=[0]),
            "local_window_size",
            id="longformer-no-window",
        ),
        pytest.param(
            lambda q: ops.longformer(q, q, q, local_window_size=2, global_positions=[8]),
            "out of range",
            id="longformer-global-out-of-range",
        ),
        pytest.param(
            lambda q: ops.longformer(q, q, q, local_window_size=2, global_positions=[-1]),
            "out of range",
            id="longformer-global-negative",
        ),
        pytest.param(
            lambda q: ops.block_sparse(q, q, q, layout=np.ones((3, 2), bool), block_size=4),
            "layout",
            id="layout-shape",
        ),
        pytest.param(
            lambda q: ops.block_sparse(q, q, q, layout=np.ones((2, 2)), block_size=4),
            "bool",
            id="layout-not-bool",
        ),
        pytest.param(
            lambda q: ops.block_sparse(q, q, q, layout=np.ones((2, 2), bool), block_size=0),
            "block",
            id="block-size-0",
        ),
        pytest.param(
            lambda q: jax.jit(lambda lay: ops.block_sparse(q, q, q, layout=lay, block_size=4))(
                jnp.ones((2, 2), bool)
            ),
            "concrete",
            id="traced-layout",
        ),
    ],
)
def test_bad_parameters_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(jnp.ones((1, 8, 2, 4)))
