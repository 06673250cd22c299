"""Training an MoE language model balances its router: the load-balancing loss falls to ~1."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attention_jax import data, models
from attention_jax.layers import moe
from attention_jax.models import config as model_config
from attention_jax.train import step


def _train(tmp_path, load_balancing_weight, steps=150):
    task = data.get_task(
        "mqar/small_s64_kv4", data_dir=str(tmp_path), num_train=512, num_validation=8, num_test=8
    )
    config = model_config.LanguageModelConfig(
        vocab_size=task.vocab_size,
        max_len=task.seq_len,
        d_model=32,
        num_heads=2,
        mlp_dim=64,
        num_layers=1,
        moe={"num_experts": 4, "top_k": 1, "every_n_layers": 1, "capacity_factor": 2.0},
    )
    model = models.build(config, rngs=nnx.Rngs(0))
    # Start unbalanced: shift the router's input by a constant vector (the pre-FFN norm's
    # bias) that expert 0's router column is aligned with, so every token prefers expert 0.
    block = model.decoder.blocks[0]
    assert isinstance(block.ffn, moe.MoEFeedForward)
    block.ffn_norm.bias[...] = jnp.ones_like(block.ffn_norm.bias[...])
    block.ffn.router_kernel[...] = block.ffn.router_kernel[...].at[:, 0].add(0.2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)
    train_step = jax.jit(
        step.make_train_step(
            graphdef, tx, lambda s: 3e-3, task.kind, moe_weights=(load_balancing_weight, 0.0)
        )
    )
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "rest": rest,
        "opt_state": tx.init(params),
    }
    batches = iter(task.pipeline("train", batch_size=16, seed=0, prefetch=0))
    balance = []
    for _ in range(steps):
        state, metrics = train_step(state, next(batches))
        balance.append(float(metrics["train/moe_load_balancing_loss"]))
    return np.array(balance)


def test_load_balancing_loss_drives_the_router_to_balance(tmp_path):
    balanced = _train(tmp_path, load_balancing_weight=0.1)
    ignored = _train(tmp_path, load_balancing_weight=0.0)
    assert balanced[:5].mean() > 1.5  # the skewed start
    assert balanced[-20:].mean() < 1.1  # 1.0 is perfectly balanced
    assert balanced[-20:].mean() < ignored[-20:].mean() - 0.1
