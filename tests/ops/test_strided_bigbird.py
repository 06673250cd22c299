"""strided and bigbird: their patterns checked by hand, their layouts, their cost, their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import count_flops, fit_exponent


def _pairs(rule, n):
    return np.array([[rule(i, j) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_strided_pattern_is_band_plus_same_residue(stride):
    """Child et al.'s strided pattern, pair by pair in plain Python."""
    want = _pairs(lambda i, j: abs(i - j) < stride or (i - j) % stride == 0, 13)
    np.testing.assert_array_equal(ops.pattern_mask("strided", 13, 13, stride=stride), want)


@pytest.mark.parametrize("stride, summary", [(1, 1), (4, 1), (4, 2), (5, 5)])
def test_fixed_pattern_is_own_block_plus_summary_columns(stride, summary):
    want = _pairs(lambda i, j: i // stride == j // stride or j % stride >= stride - summary, 13)
    got = ops.pattern_mask("strided", 13, 13, stride=stride, pattern="fixed", summary_size=summary)
    np.testing.assert_array_equal(got, want)


def test_bigbird_layout_has_window_global_and_random_blocks():
    layout = ops.bigbird_layout(16, 16, num_global_blocks=2, num_random_blocks=3, seed=7)
    assert layout[:2].all() and layout[:, :2].all()
    for i in range(2, 16):
        window = {j for j in (i - 1, i, i + 1) if 0 <= j < 16}
        assert window <= set(np.flatnonzero(layout[i]))
        extra = set(np.flatnonzero(layout[i])) - window - {0, 1}
        assert len(extra) == 3, (i, extra)


def test_bigbird_layout_is_a_pure_function_of_the_seed():
    def draw(seed):
        return ops.bigbird_layout(32, 32, seed=seed)

    np.testing.assert_array_equal(draw(3), draw(3))
    assert (draw(3) != draw(4)).any()
    key = jax.random.key(5)
    np.testing.assert_array_equal(draw(key), draw(key))
    assert (draw(key) != draw(jax.random.key(6))).any()


def test_bigbird_per_head_layouts_differ_and_causal_draws_only_the_past():
    layout = ops.bigbird_layout(32, 32, num_heads=4, seed=0, is_causal=True)
    assert layout.shape == (4, 32, 32)
    assert (layout[0] != layout[1]).any()
    random_part = layout & ~ops.bigbird_layout(32, 32, num_random_blocks=0, num_heads=4)
    assert not np.triu(random_part, 1).any()
    # Every non-global row drew its 3 random blocks (from the past when enough blocks exist).
    assert (random_part[:, 6:].sum(-1) == 3).all()


def _flops(op, n):
    x = jax.ShapeDtypeStruct((1, n, 8, 64), jnp.float32)
    return count_flops(op, x, x, x)


def test_strided_flops_grow_no_faster_than_n_to_the_1_5_with_stride_sqrt_n():
    """With stride = sqrt(n) the band and the residue classes each cost O(n^1.5)."""
    ns = [1024, 4096, 16384]
    flops = [
        _flops(lambda q, k, v, n=n: ops.strided(q, k, v, stride=int(n**0.5), is_causal=True), n)
        for n in ns
    ]
    # The band's fixed 128-blocks dominate at these n, so the fit sits well under 1.5.
    assert fit_exponent(ns, flops) <= 1.55
    assert flops[-1] <= _flops(ops.dense, ns[-1]) / 30


def test_fixed_flops_at_fixed_stride_are_far_below_dense():
    n = 8192

    def fixed(q, k, v):
        return ops.strided(q, k, v, stride=128, pattern="fixed", summary_size=8)

    assert _flops(fixed, n) <= _flops(ops.dense, n) / 6


@pytest.mark.parametrize("per_head", [False, True])
def test_bigbird_flops_grow_linearly(per_head):
    ns = [1024, 2048, 4096, 8192]
    flops = [_flops(lambda q, k, v: ops.bigbird(q, k, v, per_head=per_head), n) for n in ns]
    assert fit_exponent(ns, flops) <= 1.1
    # 3 window + 2 global + 3 random of 128 blocks, plus 2 full global rows: ~1/13 of dense.
    assert flops[-1] <= _flops(ops.dense, ns[-1]) / 10


X = jnp.ones((1, 8, 2, 4))


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(lambda: ops.strided(X, X, X), "stride is required", id="no-stride"),
        pytest.param(lambda: ops.strided(X, X, X, stride=0), ">= 1", id="stride-0"),
        pytest.param(lambda: ops.strided(X, X, X, stride=2.0), "int", id="stride-float"),
        pytest.param(lambda: ops.strided(X, X, X, stride=2, pattern="x"), "pattern", id="pattern"),
        pytest.param(
            lambda: ops.strided(X, X, X, stride=2, pattern="fixed", summary_size=3),
            "summary_size",
            id="summary-too-big",
        ),
        pytest.param(
            lambda: ops.strided(X, X[:, :6], X[:, :6], stride=2), "self-attention", id="cross"
        ),
        pytest.param(
            lambda: ops.strided(X, X, X, mask=jnp.ones((8, 8), bool), stride=2),
            "mask is not supported",
            id="strided-mask",
        ),
        pytest.param(
            lambda: ops.strided(X, X, X, jnp.zeros((8, 8)), stride=2),
            "bias is not supported",
            id="strided-bias",
        ),
        pytest.param(
            lambda: ops.bigbird(X, X, X, num_window_blocks=2), "odd", id="bigbird-even-window"
        ),
        pytest.param(
            lambda: ops.bigbird(X, X, X, num_random_blocks=-1), ">= 0", id="bigbird-negative"
        ),
        pytest.param(lambda: ops.bigbird(X, X, X, block_size=0), "block_size", id="bigbird-block"),
        pytest.param(
            lambda: jax.jit(lambda s: ops.bigbird(X, X, X, seed=s))(jax.random.key(0)),
            "concrete",
            id="bigbird-traced-seed",
        ),
        pytest.param(
            lambda: ops.block_sparse(X, X, X, layout=np.ones((3, 2, 2), bool), block_size=4),
            "num_heads",
            id="per-head-layout-wrong-heads",
        ),
    ],
)
def test_bad_parameters_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
