"""A kind defined and registered here, and nowhere else, works everywhere a built-in one does:
the layer, the four model families, decoding, attention maps, the cost harness and a suite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers, ops, suite
from attention_jax.configs import compare
from attention_jax.ops import sparse
from tests.models import tiny

NAME = "test_sliding_window"
WINDOW = (3, 0)  # the record's own default: three keys back, none ahead


def sliding_window(query, key, value, bias=None, mask=None, *, local_window_size, **contract):
    """A sliding window by way of the local op; its name and default are this file's."""
    return ops.local(query, key, value, bias, mask, local_window_size=local_window_size, **contract)


@pytest.fixture(autouse=True, scope="module")
def registered():
    ops.register(
        ops.Kind(
            NAME,
            sliding_window,
            sparse.local_pattern,
            time_exponent=1.0,
            decoding=ops.Decoding.WINDOW,
            window_in_decoding=True,
            defaults={"local_window_size": WINDOW},
        )
    )
    yield
    ops.unregister(NAME)


def test_the_layer_applies_the_records_default_window():
    layer = layers.MultiHeadAttention(16, 2, kind=NAME, rngs=nnx.Rngs(0))
    reference = layers.MultiHeadAttention(16, 2, kind="dense", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    pattern = ops.pattern_mask("local", 8, 8, local_window_size=WINDOW)
    got = layer(x, is_causal=True)
    want = reference(x, mask=jnp.asarray(pattern)[None, None], is_causal=True)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_decoding_token_by_token_equals_the_full_causal_pass():
    layer = layers.MultiHeadAttention(16, 2, kind=NAME, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (1, 8, 16))
    full = layer(x, is_causal=True)
    layer.init_cache(1, 8)
    steps = [layer(x[:, t : t + 1], decode=True) for t in range(8)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=2e-5, atol=2e-6)
    assert layer.cache.get_value().key.shape[-1] == WINDOW[0]  # a ring of the window, not 8


def test_its_attention_map_keeps_to_the_window():
    q = jax.random.normal(jax.random.key(3), (1, 8, 2, 4))
    weights = ops.attention_map(NAME, q, q, is_causal=True, local_window_size=WINDOW)
    outside = ~ops.pattern_mask("local", 8, 8, local_window_size=WINDOW)
    assert np.all(np.asarray(weights)[..., outside] == 0)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_every_model_family_builds_and_runs_it(family):
    model = tiny.model(family, attention=NAME)
    logits = tiny.apply(model, family, tiny.inputs(family))
    assert np.all(np.isfinite(np.asarray(logits)))


def test_a_tiny_suite_trains_it_and_measures_its_cost(tmp_path):
    config = compare.get_config("tiny")
    config.data_dir = str(tmp_path / "tfds")
    config.kinds = {NAME: {}}
    config.learning_rates = (1e-2,)
    for task in config.tasks.values():
        task.train.num_steps = 10
        task.train.eval_every = 5
        task.train.checkpoint.every_steps = 10
    rows = suite.run_suite(config, str(tmp_path / "suite"), devices=jax.devices()[:1])
    assert [row["kind"] for row in rows] == [NAME]
    assert rows[0]["theory_exponent"] == 1.0 and rows[0]["train_step_ms"] > 0
