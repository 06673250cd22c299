"""Attention maps of a whole model, rollout and span, against float64 NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import analysis, layers, models


def _lm(kind, **kind_params):
    config = models.LanguageModelConfig(
        vocab_size=30,
        d_model=16,
        num_heads=2,
        mlp_dim=32,
        num_layers=3,
        attention=kind,
        kind_params=kind_params,
        max_len=12,
    )
    return models.build(config, rngs=nnx.Rngs(0))


TOKENS = jax.random.randint(jax.random.key(0), (2, 12), 0, 30)


@pytest.mark.parametrize(
    "kind, params", [("dense", {}), ("local", {"local_window_size": (3, 0)}), ("linear", {})]
)
def test_maps_are_one_causal_distribution_per_layer_and_head(kind, params):
    model = _lm(kind, **params)
    maps = analysis.attention_maps(model, TOKENS)
    assert len(maps) == 3 and all(m.shape == (2, 2, 12, 12) for m in maps)
    for weights in map(np.asarray, maps):
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        assert np.abs(np.triu(weights, k=1)).max() == 0
        if kind == "local":  # nothing beyond the window of 3 earlier keys
            assert np.abs(np.tril(weights, k=-4)).max() == 0
    # Recording is switched back off, and the output is unchanged by it.
    assert not any(
        m.record_maps for _, m in nnx.iter_graph(model) if isinstance(m, layers.MultiHeadAttention)
    )


def test_a_model_without_attention_layers_is_refused():
    with pytest.raises(ValueError, match="no MultiHeadAttention"):
        analysis.attention_maps(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2)))


def _random_maps(rng, layers_=3, B=2, N=2, T=6):
    logits = rng.standard_normal((layers_, B, N, T, T))
    weights = np.exp(logits) * np.tril(np.ones((T, T)))
    return list(weights / weights.sum(-1, keepdims=True))


def test_rollout_matches_float64():
    rng = np.random.default_rng(0)
    maps = _random_maps(rng)
    want = None
    for weights in maps:
        mixed = 0.5 * weights.mean(1) + 0.5 * np.eye(6)
        mixed /= mixed.sum(-1, keepdims=True)
        want = mixed if want is None else np.einsum("bij,bjk->bik", mixed, want)
    got = analysis.attention_rollout([jnp.asarray(m, jnp.float32) for m in maps])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, atol=1e-5)


def test_span_matches_a_loop_and_skips_empty_rows():
    rng = np.random.default_rng(1)
    weights = _random_maps(rng, layers_=1)[0]
    weights[1, :, 4:] = 0.0  # padding queries of the second sequence
    got = np.asarray(analysis.mean_attention_span(jnp.asarray(weights)))
    for b in range(2):
        for n in range(2):
            rows = [i for i in range(6) if weights[b, n, i].sum() > 0]
            want = np.mean([sum(weights[b, n, i, j] * abs(i - j) for j in range(6)) for i in rows])
            assert got[b, n] == pytest.approx(want, rel=1e-5)


def test_span_of_attention_to_oneself_is_zero_and_to_the_first_token_grows():
    T = 5
    itself = jnp.eye(T)[None, None]
    first = jnp.zeros((1, 1, T, T)).at[..., 0].set(1.0)
    assert float(analysis.mean_attention_span(itself)[0, 0]) == 0.0
    assert float(analysis.mean_attention_span(first)[0, 0]) == pytest.approx(np.mean(range(T)))
