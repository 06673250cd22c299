"""Forward values of the exact-softmax ops against the float64 reference and jax.nn."""

import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .cases import BF16_TOL, F32_TOL
from .reference import attention_np, jax_nn_attention, random_masking, random_qkv, valid_rows

# Small flash blocks give many blocks, partial last blocks (37 = 2*16 + 5, 53 = 6*8 + 5) and
# blocks that masks skip; the default blocks are larger than every sequence here.
KINDS = [
    pytest.param("dense", {}, id="dense"),
    pytest.param("flash", dict(block_q=16, block_kv=8), id="flash-16x8"),
    pytest.param("flash", {}, id="flash-default"),
]

# (B, T, S, N, K, H)
SHAPE = (2, 37, 53, 8, 2, 32)

# Every masking form at SHAPE, then combinations.
FORM_CASES = [
    pytest.param(forms, id="+".join(forms) or "none")
    for forms in [
        (),
        ("causal",),
        ("window",),
        ("window_int",),
        ("q_lengths",),
        ("kv_lengths",),
        ("segments",),
        ("mask",),
        ("mask_B1TS",),
        ("bias",),
        ("bias_1NTS",),
        ("bias_B1TS",),
        ("scale",),
        ("causal", "kv_lengths"),
        ("window", "segments"),
        ("mask", "bias", "causal"),
        (
            "causal",
            "window",
            "q_lengths",
            "kv_lengths",
            "segments",
            "mask_B1TS",
            "bias_1NTS",
            "scale",
        ),
    ]
]

# Every shape and head layout, each under one masking form.
SHAPE_CASES = [
    pytest.param(shape, forms, id=name)
    for name, shape, forms in [
        ("T64-S64_MHA_H64", (2, 64, 64, 8, 8, 64), ("causal",)),
        ("T64-S64_MQA_H80", (2, 64, 64, 8, 1, 80), ("kv_lengths",)),
        ("T37-S53_MHA_H80", (2, 37, 53, 8, 8, 80), ()),
        ("T53-S37_GQA_H64_causal", (2, 53, 37, 8, 2, 64), ("causal",)),
        ("T1-S53_MQA_H32", (2, 1, 53, 8, 1, 32), ("kv_lengths", "bias")),
        ("T1-S53_GQA_H64_causal", (2, 1, 53, 8, 2, 64), ("causal",)),
        ("T1-S1_MHA_H32", (2, 1, 1, 8, 8, 32), ()),
    ]
]


def check_against_references(kind, kind_kw, shape, forms, dtype=jnp.float32, tol=F32_TOL):
    """Runs the op and compares it with the float64 reference and, on valid rows, jax.nn."""
    B, T, S, N, K, H = shape
    q, k, v = random_qkv(0, *shape, dtype=dtype)
    kwargs = random_masking(1, forms, B, T, S, N)
    out = ops.get(kind)(q, k, v, **kwargs, **kind_kw)
    assert out.shape == (B, T, N, H) and out.dtype == dtype
    out = np.asarray(out, np.float64)
    np.testing.assert_allclose(out, attention_np(q, k, v, **kwargs), **tol)
    if dtype == jnp.float32:
        valid_BTN = valid_rows(q, k, **kwargs)
        expected = np.asarray(jax_nn_attention(q, k, v, **kwargs))
        np.testing.assert_allclose(out[valid_BTN], expected[valid_BTN], **tol)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
@pytest.mark.parametrize("forms", FORM_CASES)
def test_masking_forms(kind, kind_kw, forms):
    """Each masking form and some combinations match both references in float32."""
    check_against_references(kind, kind_kw, SHAPE, forms)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
@pytest.mark.parametrize("shape, forms", SHAPE_CASES)
def test_shapes_and_heads(kind, kind_kw, shape, forms):
    """T != S, T = 1, MHA / GQA / MQA and head dims 32, 64, 80 match both references."""
    check_against_references(kind, kind_kw, shape, forms)


@pytest.mark.parametrize("kind, kind_kw", KINDS)
@pytest.mark.parametrize(
    "forms",
    [
        pytest.param((), id="none"),
        pytest.param(("causal", "kv_lengths"), id="causal+kv_lengths"),
        pytest.param(
            ("window", "segments", "q_lengths", "bias"), id="window+segments+q_lengths+bias"
        ),
    ],
)
def test_bfloat16(kind, kind_kw, forms):
    """bfloat16 inputs give a bfloat16 output close to the float64 reference."""
    check_against_references(kind, kind_kw, SHAPE, forms, dtype=jnp.bfloat16, tol=BF16_TOL)


def _empty_rows_kwargs(name, B, T, S, N):
    """Masking arguments that leave some query rows with no allowed key."""
    if name == "kv_length_0":
        return dict(key_value_seq_lengths=jnp.array([0, S], jnp.int32))
    if name == "mask_row_false":
        mask = np.ones((B, N, T, S), bool)
        mask[0, 3, 5] = False
        mask[1, :, -1] = False
        return dict(mask=jnp.asarray(mask))
    if name == "window_past_keys":
        # T > S: with a (0, 0) window, queries t >= S have no key t.
        return dict(local_window_size=(0, 0))
    if name == "segment_absent":
        q_seg = np.zeros((B, T), np.int32)
        q_seg[:, T // 2 :] = 7
        return dict(
            query_segment_ids=jnp.asarray(q_seg), key_value_segment_ids=jnp.zeros((B, S), jnp.int32)
        )
    assert name == "q_lengths_padding"
    return dict(query_seq_lengths=jnp.array([3, 0], jnp.int32))


@pytest.mark.parametrize("kind, kind_kw", KINDS[:2])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize(
    "name",
    ["kv_length_0", "mask_row_false", "window_past_keys", "segment_absent", "q_lengths_padding"],
)
def test_fully_masked_rows_are_exact_zeros(kind, kind_kw, dtype, name):
    """Rows with no allowed key output exactly 0 (not jax.nn's uniform average), never NaN."""
    B, T, S, N, K, H = 2, 21, 13, 4, 2, 16
    q, k, v = random_qkv(0, B, T, S, N, K, H, dtype=dtype)
    kwargs = _empty_rows_kwargs(name, B, T, S, N)
    valid_BTN = valid_rows(q, k, **kwargs)
    assert not valid_BTN.all()
    out = np.asarray(ops.get(kind)(q, k, v, **kwargs, **kind_kw), np.float64)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[~valid_BTN], 0.0)
    tol = F32_TOL if dtype == jnp.float32 else BF16_TOL
    np.testing.assert_allclose(out, attention_np(q, k, v, **kwargs), **tol)


@pytest.mark.parametrize("kind, kind_kw", KINDS[:2])
def test_value_head_dim_may_differ_from_key(kind, kind_kw):
    """value [B, S, K, Hv] with Hv != H gives output [B, T, N, Hv] matching the reference."""
    B, T, S, N, K, H = 2, 17, 29, 4, 2, 16
    q, k, _ = random_qkv(0, B, T, S, N, K, H)
    _, _, v = random_qkv(1, B, T, S, N, K, 24)
    kwargs = random_masking(2, ("causal", "kv_lengths"), B, T, S, N)
    out = ops.get(kind)(q, k, v, **kwargs, **kind_kw)
    assert out.shape == (B, T, N, 24)
    np.testing.assert_allclose(
        np.asarray(out, np.float64), attention_np(q, k, v, **kwargs), **F32_TOL
    )
