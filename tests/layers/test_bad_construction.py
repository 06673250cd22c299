"""Layers built directly in Python refuse a bad argument at construction, and name it."""

import numpy as np
import pytest
from flax import nnx

from attention_jax import layers

D, N, F, E = 8, 2, 16, 2
REQUIRED = {
    "MultiHeadAttention": dict(in_features=D, num_heads=N),
    "MoEAttention": dict(in_features=D, num_heads=N, num_experts=E),
    "FeedForward": dict(d_model=D, hidden=F),
    "MoEFeedForward": dict(d_model=D, hidden=F, num_experts=E),
    "EncoderBlock": dict(d_model=D, num_heads=N, mlp_dim=F),
    "DecoderBlock": dict(d_model=D, num_heads=N, mlp_dim=F),
}


def _build(layer: str, **kwargs):
    return getattr(layers, layer)(**{**REQUIRED[layer], **kwargs}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "layer,argument,value",
    [
        # Floats and strings used to fail deep inside jax with a TypeError; True built one head.
        ("MultiHeadAttention", "num_heads", 2.0),
        ("MultiHeadAttention", "num_heads", "2"),
        ("MultiHeadAttention", "num_heads", True),
        ("MultiHeadAttention", "num_kv_heads", 1.0),
        ("MultiHeadAttention", "head_dim", 4.0),
        ("MoEAttention", "num_heads", 2.0),
        ("FeedForward", "hidden", "16"),
        ("MoEFeedForward", "num_experts", 2.0),
        ("EncoderBlock", "num_heads", 2.0),
        ("DecoderBlock", "mlp_dim", 16.0),
    ],
)
def test_a_size_that_is_not_a_positive_integer_is_refused(layer, argument, value):
    with pytest.raises(ValueError, match=f"{layer}: {argument} must be a positive integer"):
        _build(layer, **{argument: value})


@pytest.mark.parametrize("layer", ["MultiHeadAttention", "FeedForward", "EncoderBlock"])
@pytest.mark.parametrize("rate", [1.5, -0.1, 1.0])
def test_a_dropout_rate_outside_0_to_1_is_refused(layer, rate):
    with pytest.raises(ValueError, match=rf"{layer}: dropout_rate must be a number in \[0, 1\)"):
        _build(layer, dropout_rate=rate)


def test_performer_num_features_0_is_refused_not_replaced_by_the_default():
    with pytest.raises(ValueError, match=r"\(performer\): num_features must be a positive"):
        _build("MultiHeadAttention", kind="performer", kind_params={"num_features": 0})


def _linformer(**kind_params):
    return _build("MultiHeadAttention", kind="linformer", max_len=8, kind_params=kind_params)


@pytest.mark.parametrize("projected_len", [0, -1, 2.0])
def test_linformer_projected_len_must_be_a_positive_integer(projected_len):
    with pytest.raises(ValueError, match=r"\(linformer\): projected_len must be a positive"):
        _linformer(projected_len=projected_len)


def test_linformer_projections_are_checked_against_each_other_and_max_len():
    # They used to be dropped silently; the op itself reports a row mismatch as "dense: ...".
    with pytest.raises(ValueError, match=r"\(linformer\): key_projection and value_projection"):
        _linformer(key_projection=np.ones((4, 8)), value_projection=np.ones((3, 8)))
    with pytest.raises(ValueError, match="'projected_len': 3"):
        _linformer(key_projection=np.ones((4, 8)), projected_len=3)
    with pytest.raises(ValueError, match=r"value_projection must be \[projected_len >= 1, max_len"):
        _linformer(value_projection=np.ones((4, 6)))


def test_given_linformer_projections_are_the_initial_learned_ones():
    e, f = np.full((4, 8), 0.5), np.full((4, 8), -0.5)
    layer = _linformer(key_projection=e, value_projection=f)
    np.testing.assert_array_equal(layer.linformer_e[...], e)
    np.testing.assert_array_equal(layer.linformer_f[...], f)
    # One given: the other is drawn with as many rows.
    assert _linformer(key_projection=e).linformer_f.shape == (4, 8)
