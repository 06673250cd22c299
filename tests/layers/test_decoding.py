"""Decoding: token by token (and chunk by chunk) equals the full causal forward for every kind."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers, ops
from attention_jax.layers import decoding

D, N, K, T = 32, 4, 2, 20
# Small patterns so that 20 tokens cross several windows, blocks and strides.
SMALL_PATTERNS = {
    "local": {"local_window_size": (5, 5)},
    "longformer": {"local_window_size": (3, 3), "global_positions": (0, 7)},
    "bigbird": {"block_size": 4},
    "block_sparse": {"block_size": 4},
    "moba": {"block_size": 4, "top_k": 2},
}
TAKES_BIAS = ("dense", "flash", "local")


def _layer(kind, positions=None, **kwargs):
    return layers.MultiHeadAttention(
        D,
        N,
        num_kv_heads=K,
        kind=kind,
        kind_params=SMALL_PATTERNS.get(kind),
        positions=positions,
        max_len=T,
        rngs=nnx.Rngs(0),
        **kwargs,
    )


X = jax.random.normal(jax.random.key(1), (2, T, D))


@nnx.jit
def _decode(layer, x):
    return layer(x, decode=True)


def _decode_in_pieces(layer, x, pieces):
    """Decodes x piece by piece (jitted once per piece length) and joins the outputs."""
    bounds = np.cumsum([0, *pieces])
    return jnp.concatenate([_decode(layer, x[:, a:b]) for a, b in zip(bounds, bounds[1:])], 1)


CASES = [(kind, None) for kind in sorted(decoding.strategies())]
CASES += [(kind, "rope") for kind in sorted(decoding.strategies())]
CASES += [(kind, "alibi") for kind in TAKES_BIAS]


@pytest.mark.parametrize("kind,positions", CASES)
def test_decoding_equals_the_full_causal_forward(kind, positions):
    layer = _layer(kind, positions)
    want = layer(X, is_causal=True)
    layer.init_cache(2, T)
    # A 7-token prompt in one call, then single tokens.
    got = _decode_in_pieces(layer, X, [7] + [1] * (T - 7))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    # Re-initialising empties the state: decoding again gives the same tokens.
    layer.init_cache(2, T)
    np.testing.assert_allclose(_decode(layer, X[:, :7]), want[:, :7], atol=2e-5, rtol=2e-5)


def test_local_cache_is_bounded_by_its_window_and_runs_past_max_len_of_a_full_cache():
    layer = _layer("local")
    layer.init_cache(2, T)
    assert layer.cache.get_value().key.shape == (2, K, D // N, 5)
    want = layer(X, is_causal=True)
    got = _decode_in_pieces(layer, X, [3] * 6 + [2])  # chunks shorter than the window ...
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    layer.init_cache(2, T)
    got = _decode_in_pieces(layer, X, [13, 7])  # ... and longer than it
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(
    "kind, short_conv", [("dense", 4), ("mamba2", 4), ("gated_deltanet", 3), ("gla", 1)]
)
def test_decoding_with_a_short_convolution_equals_the_full_causal_forward(kind, short_conv):
    layer = _layer(kind, short_conv=short_conv)
    want = layer(X, is_causal=True)
    layer.init_cache(2, T)
    # A prompt shorter than the convolution, then one longer, then single tokens.
    got = _decode_in_pieces(layer, X, [2, 9] + [1] * (T - 11))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("kind", ["performer", "retnet", "gated_deltanet"])
def test_recurrent_state_does_not_grow_with_length(kind):
    layer = _layer(kind)
    layer.init_cache(2, T)
    before = jax.tree.map(jnp.shape, layer.cache.get_value())
    layer(X, decode=True)
    assert jax.tree.map(jnp.shape, layer.cache.get_value()) == before


def test_a_kind_without_an_incremental_form_says_so():
    layer = _layer("linformer")
    with pytest.raises(ValueError, match="'linformer' cannot decode"):
        layer.init_cache(2, T)
    assert set(decoding.strategies()) == set(ops.names()) - {"linformer"}


# One kind per decoding state. A ring buffer or a recurrent state has no slot to overflow (its
# outputs past max_len would still be right), but max_len is init_cache's bound for every kind
# and eager decoding refuses to pass it, so under jit those kinds give NaN as well: jit and
# eager never disagree about which calls are valid.
PAST_MAX_LEN_KINDS = {
    "kv": "dense",
    "window": "local",
    "recurrent": "linear",
    "state": "gated_deltanet",
    "blocks": "moba",
}
CACHE = 8


@pytest.mark.parametrize("state", sorted(set(decoding.strategies().values())))
def test_jitted_decoding_past_max_len_gives_nan_and_leaves_earlier_steps_alone(state):
    layer = _layer(PAST_MAX_LEN_KINDS[state])
    want = layer(X[:, :CACHE], is_causal=True)
    layer.init_cache(2, CACHE)
    steps = [_decode(layer, X[:, t : t + 1]) for t in range(CACHE + 2)]
    np.testing.assert_allclose(jnp.concatenate(steps[:CACHE], 1), want, atol=2e-5, rtol=2e-5)
    assert np.isnan(steps[CACHE]).all() and np.isnan(steps[CACHE + 1]).all()


def test_a_jitted_call_that_crosses_max_len_gives_nan_for_all_its_tokens():
    layer = _layer("dense")
    layer.init_cache(2, CACHE)
    _decode(layer, X[:, : CACHE - 2])
    # Its first two tokens fit, but the clamped cache write moves the whole call back a slot,
    # over a key they must see: no token of such a call can be trusted.
    assert np.isnan(_decode(layer, X[:, CACHE - 2 : CACHE + 1])).all()


def test_decoding_errors():
    layer = _layer("dense")
    with pytest.raises(ValueError, match="init_cache"):
        layer(X[:, :1], decode=True)
    layer.init_cache(2, 4)
    layer(X[:, :3], decode=True)
    with pytest.raises(ValueError, match="exceeds init_cache's max_len 4"):
        layer(X[:, :2], decode=True)
    with pytest.raises(ValueError, match="context"):
        layer(X[:, :1], X, decode=True)
    with pytest.raises(ValueError, match="mask"):
        layer(X[:, :1], mask=jnp.ones((1, 1, 1, 1), bool), decode=True)
    with pytest.raises(ValueError, match="positive"):
        layer.init_cache(0, 4)
    with pytest.raises(ValueError, match="limited to max_len <= 8192"):
        _layer("bigbird").init_cache(1, 8193)
    with pytest.raises(ValueError, match="horizon"):
        _layer("cosformer").init_cache(2, 2 * T)
