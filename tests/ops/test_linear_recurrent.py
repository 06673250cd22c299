"""ops.linear_step / linear_state_init decoding token by token against the causal parallel form
and the float64 quadratic-form reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .linear_cases import F32_TOL, KINDS, make_case
from .linear_reference import linear_attention_np, random_inputs

DECODE_SHAPE = (2, 13, 13, 4, 2, 6, 5)  # B, T, S, N, K, H, Hv


def _decode_inputs(kind):
    B, T, _, N, K, H, Hv = DECODE_SHAPE
    q, k, v = (jnp.asarray(x, jnp.float32) for x in random_inputs(11, *DECODE_SHAPE))
    op, ref_phi, _, step_map = make_case(kind, H, T, 11, extra_len=4)
    state = ops.linear_state_init(B, K, H, feature_map=step_map, value_dim=Hv)
    return q, k, v, op, ref_phi, step_map, state


@pytest.mark.parametrize("kind", KINDS)
def test_step_by_step_decoding_equals_parallel_causal(kind):
    """linear_step token by token (eagerly, under jit, and in a jitted lax.scan) equals the
    causal parallel form and the reference, with GQA."""
    q, k, v, op, ref_phi, step_map, state0 = _decode_inputs(kind)
    state, outs = state0, []
    for t in range(q.shape[1]):
        out_t, state = ops.linear_step(state, q[:, t], k[:, t], v[:, t], feature_map=step_map)
        outs.append(out_t)
    stepped = jnp.stack(outs, axis=1)
    np.testing.assert_array_equal(state.position, q.shape[1])

    parallel = jax.jit(
        lambda q, k, v: ops.linear(q, k, v, is_causal=True, feature_map=step_map, chunk_size=4)
    )(q, k, v)
    np.testing.assert_allclose(stepped, parallel, **F32_TOL)
    np.testing.assert_allclose(
        parallel, jax.jit(lambda q, k, v: op(q, k, v, is_causal=True))(q, k, v), **F32_TOL
    )
    np.testing.assert_allclose(
        stepped, linear_attention_np(q, k, v, ref_phi, is_causal=True), **F32_TOL
    )

    step = jax.jit(functools.partial(ops.linear_step, feature_map=step_map))
    out_0, state_1 = step(state0, q[:, 0], k[:, 0], v[:, 0])
    np.testing.assert_allclose(out_0, stepped[:, 0], **F32_TOL)
    np.testing.assert_array_equal(state_1.position, 1)

    @jax.jit
    def scanned(state, q, k, v):
        def body(state, xs):
            out_t, state = ops.linear_step(state, *xs, feature_map=step_map)
            return state, out_t

        xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v))
        state, outs = jax.lax.scan(body, state, xs)
        return jnp.moveaxis(outs, 0, 1), state

    out, final = scanned(state0, q, k, v)
    np.testing.assert_allclose(out, stepped, **F32_TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **F32_TOL), final, state)
