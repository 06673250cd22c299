"""bigbird alone: its block layout checked by hand, its cost against dense, its errors."""

import jax
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.bench import fit_exponent

from .cases import X, _flops


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


@pytest.mark.parametrize("per_head", [False, True])
def test_bigbird_flops_grow_linearly(per_head):
    ns = [1024, 2048, 4096, 8192]
    flops = [_flops(lambda q, k, v: ops.bigbird(q, k, v, per_head=per_head), n) for n in ns]
    assert fit_exponent(ns, flops) <= 1.1
    # 3 window + 2 global + 3 random of 128 blocks, plus 2 full global rows: ~1/13 of dense.
    assert flops[-1] <= _flops(ops.dense, ns[-1]) / 10


@pytest.mark.parametrize(
    "call, match",
    [
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
