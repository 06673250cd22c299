"""strided alone: its patterns checked pair by pair in plain Python, its cost, its errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import fit_exponent

from .cases import X, _flops


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
    ],
)
def test_bad_parameters_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
