"""Schedules, weight-decay masks and gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attention_jax.train import optim, step


def test_cosine_warms_up_then_decays_to_the_end_fraction():
    config = optim.OptimizerConfig(
        learning_rate=1.0, warmup_steps=10, end_learning_rate_fraction=0.1
    )
    lr = optim.learning_rate_schedule(config, num_steps=110)
    np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(lr(60), 0.1 + 0.9 * 0.5, atol=1e-6)
    np.testing.assert_allclose(lr(110), 0.1, atol=1e-6)


def test_rsqrt_is_continuous_after_warmup_and_falls_as_one_over_sqrt_step():
    config = optim.OptimizerConfig(learning_rate=2.0, warmup_steps=100, schedule="rsqrt")
    lr = optim.learning_rate_schedule(config, num_steps=10_000)
    np.testing.assert_allclose([lr(50), lr(100), lr(400)], [1.0, 2.0, 1.0], rtol=1e-5)


def test_decay_mask_spares_norms_biases_and_embeddings():
    params = {
        "embedder": {"embed": {"embedding": 0}},
        "block": {"ffn": {"up": {"kernel": 0, "bias": 0}}, "norm": {"scale": 0}},
    }
    mask = optim.decay_mask(params)
    assert mask == {
        "embedder": {"embed": {"embedding": False}},
        "block": {"ffn": {"up": {"kernel": True, "bias": False}}, "norm": {"scale": False}},
    }


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_lowers_a_quadratic(name):
    config = optim.OptimizerConfig(
        name=name, learning_rate=0.05, warmup_steps=0, schedule="constant"
    )
    tx = optim.make_optimizer(config, num_steps=100)
    params = {"w": jnp.full((4,), 3.0)}
    state = tx.init(params)
    for _ in range(50):
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(jnp.sum(params["w"] ** 2)) < 36 * 0.5


def test_microbatches_are_strided_so_each_device_keeps_a_share():
    batch = {"x": jnp.arange(8)}
    np.testing.assert_array_equal(step.microbatches(batch, 2)["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])
