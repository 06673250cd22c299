"""ops.linformer (and its errors) against the float64 Linformer formula and softmax attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .linear_cases import F32_TOL, _lengths_as_arrays, _q
from .linear_reference import linformer_np, random_inputs
from .reference import attention_np, random_qkv


@pytest.mark.parametrize(
    "shape, kv_lengths, q_lengths, shared",
    [
        pytest.param((2, 17, 23, 4, 2, 8, 8), [23, 9], None, False, id="gqa-kv-lengths"),
        pytest.param((2, 5, 12, 4, 1, 4, 6), [0, 12], [5, 2], False, id="mqa-both-lengths"),
        pytest.param((1, 30, 30, 4, 4, 8, 8), None, None, True, id="shared-projection"),
    ],
)
def test_linformer_equals_reference(shape, kv_lengths, q_lengths, shared):
    """linformer with explicit E, F (and lengths) equals the float64 Linformer formula."""
    B, T, S, N, K, H, Hv = shape
    q, k, v = random_inputs(12, *shape)
    E = ops.linformer_projection(jax.random.key(1), 7, S)
    F = None if shared else ops.linformer_projection(jax.random.key(2), 7, S)
    masking = {}
    if kv_lengths is not None:
        masking["key_value_seq_lengths"] = kv_lengths
    if q_lengths is not None:
        masking["query_seq_lengths"] = q_lengths
    out = ops.linformer(
        *(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
        key_projection=E,
        value_projection=F,
        **_lengths_as_arrays(masking),
    )
    assert out.shape == (B, T, N, Hv)
    want = linformer_np(q, k, v, np.asarray(E), None if F is None else np.asarray(F), **masking)
    np.testing.assert_allclose(out, want, **F32_TOL)


def test_linformer_with_identity_projection_is_softmax_attention():
    """E = F = I: Linformer is plain softmax attention."""
    q, k, v = random_qkv(13, 2, 6, 10, 4, 2, 8)
    eye = jnp.eye(10)
    out = ops.linformer(q, k, v, key_projection=eye, value_projection=eye)
    np.testing.assert_allclose(out, attention_np(q, k, v), **F32_TOL)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda q: ops.linformer(q, q, q, is_causal=True), "is_causal", id="linformer-causal"
        ),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(_q())
