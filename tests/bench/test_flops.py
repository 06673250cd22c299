"""count_flops: agrees with XLA where XLA can count, and counts loops XLA counts once."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from attention_jax import ops
from attention_jax.bench import count_flops


def test_matmul_is_2mnk():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert count_flops(jnp.matmul, a, b) == 2 * 8 * 16 * 4


def test_scan_multiplies_by_length():
    a = jnp.ones((32, 32))

    def ten_matmuls(x):
        return lax.scan(lambda c, _: (c @ x, None), x, None, length=10)[0]

    assert count_flops(ten_matmuls, a) == 10 * 2 * 32**3


def test_while_loop_is_refused():
    def loop(x):
        return lax.while_loop(lambda c: c.sum() < 10.0, lambda c: c + 1.0, x)

    with pytest.raises(ValueError, match="while"):
        count_flops(loop, jnp.zeros(3))


def test_dense_agrees_with_xla_cost_analysis():
    q = jnp.ones((1, 256, 4, 32))
    ours = count_flops(ops.dense, q, q, q)
    xla = jax.jit(ops.dense).lower(q, q, q).compile().cost_analysis()["flops"]
    assert ours == pytest.approx(xla, rel=0.05)
    assert ours == pytest.approx(4 * 4 * 256 * 256 * 32, rel=0.05)  # QK^T and PV dominate


def test_flash_counts_every_block_and_skips_hidden_ones():
    q = jnp.ones((1, 512, 4, 32))

    def flash(causal):
        return lambda q, k, v: ops.flash(q, k, v, block_q=64, block_kv=64, is_causal=causal)

    full, causal = count_flops(flash(False), q, q, q), count_flops(flash(True), q, q, q)
    assert full == pytest.approx(count_flops(ops.dense, q, q, q), rel=0.05)
    # 8 x 8 blocks, causal keeps the 36 on or below the diagonal.
    assert causal == pytest.approx(full * 36 / 64, rel=0.05)


def test_unknown_primitive_is_refused_not_counted_as_free():
    with pytest.raises(ValueError, match="no FLOP rule"):
        count_flops(lambda x: jnp.fft.fft(x), jnp.ones(8, jnp.complex64))


def test_a_triangular_solve_counts_m_squared_per_right_hand_side():
    a = jnp.tril(jnp.ones((3, 5, 5))) + 4 * jnp.eye(5)
    b = jnp.ones((3, 5, 7))

    def solve(a, b):
        return jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=True)

    assert count_flops(solve, a, b) == 3 * 5 * 7 * 5
