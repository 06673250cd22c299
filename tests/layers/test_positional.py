"""Position encodings against float64 NumPy formulas and their defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers


def _rope_np(x, positions, base=10000.0):
    """Rotation of pairs (i, i + H/2) by angle pos * base^(-2i/H), in float64, by loops."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    B, T, N, H = x.shape
    half = H // 2
    for b in range(B):
        for t in range(T):
            for i in range(half):
                angle = positions[b, t] * base ** (-2.0 * i / H)
                c, s = np.cos(angle), np.sin(angle)
                a, bb = x[b, t, :, i], x[b, t, :, i + half]
                out[b, t, :, i] = a * c - bb * s
                out[b, t, :, i + half] = bb * c + a * s
    return out


def test_rope_matches_the_rotation_formula():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 8))
    positions = np.array([[0, 1, 2, 3, 4], [7, 3, 100, 0, 9]])
    got = layers.apply_rope(x, jnp.asarray(positions))
    np.testing.assert_allclose(got, _rope_np(x, positions), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    """q_i . k_j after RoPE equals q_{i+s} . k_{j+s}: a shift of both positions changes nothing."""
    q = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(2), (1, 1, 1, 16))

    def score(i, j):
        return jnp.sum(
            layers.apply_rope(q, jnp.array([[i]])) * layers.apply_rope(k, jnp.array([[j]]))
        )

    np.testing.assert_allclose(score(3, 1), score(53, 51), rtol=1e-4)
    np.testing.assert_allclose(score(0, 0), jnp.sum(q * k), rtol=1e-5)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3


def test_rope_keeps_norms_and_dtype_and_accepts_shared_positions():
    x = jax.random.normal(jax.random.key(3), (2, 6, 2, 8)).astype(jnp.bfloat16)
    got = layers.apply_rope(x, jnp.arange(6))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        jnp.linalg.norm(got.astype(jnp.float32), axis=-1),
        jnp.linalg.norm(x.astype(jnp.float32), axis=-1),
        rtol=2e-2,
    )


@pytest.mark.parametrize("num_heads", [1, 4, 8, 6, 12])
def test_alibi_slopes_follow_the_paper(num_heads):
    """Geometric 2^(-8/n) for powers of two; others interleave the next power's slopes."""
    slopes = np.asarray(layers.alibi_slopes(num_heads))
    if num_heads in (1, 4, 8):
        want = [2.0 ** (-8.0 * (i + 1) / num_heads) for i in range(num_heads)]
    elif num_heads == 6:
        want = [2.0 ** (-2.0 * (i + 1)) for i in range(4)] + [2.0**-1, 2.0**-3]
    else:  # 12 = 8 + 4: the 8 slopes, then odd-indexed slopes of 16: 2^-0.5, 2^-1.5, ...
        want = [2.0 ** (-(i + 1)) for i in range(8)] + [2.0 ** (-0.5 - i) for i in range(4)]
    np.testing.assert_allclose(slopes, want, rtol=1e-6)


def test_alibi_bias_is_minus_slope_times_distance():
    bias = np.asarray(layers.alibi_bias(2, 3, 4))
    assert bias.shape == (1, 2, 3, 4)
    slopes = np.asarray(layers.alibi_slopes(2))
    for h in range(2):
        for i in range(3):
            for j in range(4):
                assert bias[0, h, i, j] == pytest.approx(-slopes[h] * abs(i - j))


def test_sinusoidal_matches_the_transformer_formula():
    table = np.asarray(layers.sinusoidal_positions(7, 6))
    for p in range(7):
        for i in range(3):
            angle = p / 10000.0 ** (2 * i / 6)
            assert table[p, 2 * i] == pytest.approx(np.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-6)


def test_learned_positions_add_rows_of_the_table_and_get_gradients():
    module = layers.LearnedPositions(8, 4, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 5, 4))
    np.testing.assert_allclose(module(x), x + module.table[:5][None])
    np.testing.assert_allclose(
        module(x, jnp.array([[7, 0, 1, 2, 3]] * 2))[:, 0], x[:, 0] + module.table[7]
    )
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(module)
    assert np.abs(np.asarray(grads.table[...])[:5]).min() > 0
    assert np.all(np.asarray(grads.table[...])[5:] == 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: layers.apply_rope(jnp.ones((1, 2, 1, 3)), jnp.arange(2)), "even"),
        (lambda: layers.alibi_slopes(0), "positive"),
        (lambda: layers.sinusoidal_positions(4, 5), "even"),
        (
            lambda: layers.LearnedPositions(4, 2, rngs=nnx.Rngs(0))(jnp.ones((1, 5, 2))),
            "max_len",
        ),
        (
            lambda: layers.LearnedPositions(4, 2, rngs=nnx.Rngs(0))(
                jnp.ones((1, 2, 2)), jnp.array([[0, 4]])
            ),
            "max_len",
        ),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
