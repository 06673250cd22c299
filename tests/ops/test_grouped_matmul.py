"""The grouped matmul against each row's own matrix product, in value, gradient and FLOPs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax.bench import count_flops
from attention_jax.ops.grouped_matmul import grouped_matmul


def _rows_times_their_matrix(x, group, w):
    return jnp.einsum("ak,akn->an", x, w[group])


@pytest.mark.parametrize(
    "rows, groups, tile, draw",
    [
        (100, 5, 8, "random"),  # rows not a multiple of the tile
        (64, 7, 16, "one group"),  # every other group empty
        (33, 4, 64, "random"),  # tile larger than every group
        (1, 3, 4, "random"),
    ],
)
def test_equals_each_row_times_its_groups_matrix(rows, groups, tile, draw):
    keys = jax.random.split(jax.random.key(rows), 4)
    x = jax.random.normal(keys[0], (rows, 6))
    w = jax.random.normal(keys[1], (groups, 6, 5))
    if draw == "one group":
        group = jnp.full((rows,), 3, jnp.int32)
    else:
        group = jax.random.randint(keys[2], (rows,), 0, groups)
    cotangent = jax.random.normal(keys[3], (rows, 5))
    fn = functools.partial(grouped_matmul, tile=tile)

    def pulled(f):
        out, pullback = jax.vjp(lambda x, w: f(x, group, w), x, w)
        return out, pullback(cotangent)

    (got, (dx, dw)), (want, (dx_want, dw_want)) = pulled(fn), pulled(_rows_times_their_matrix)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dx, dx_want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dw, dw_want, atol=1e-5, rtol=1e-5)


def test_flops_follow_the_rows_not_the_groups():
    """Counted FLOPs grow by the tile padding alone: at most groups * tile extra rows."""
    x = jax.ShapeDtypeStruct((4096, 64), jnp.float32)
    group = jax.ShapeDtypeStruct((4096,), jnp.int32)
    counts = {
        g: count_flops(grouped_matmul, x, group, jax.ShapeDtypeStruct((g, 64, 64), jnp.float32))
        for g in (4, 64)
    }
    matmul = 2 * 4096 * 64 * 64
    assert matmul <= counts[4] <= 1.1 * matmul
    assert counts[64] / counts[4] <= 1.6  # 64 groups x 32 padding rows = 2048 rows at most
