"""What the training loop costs beyond the step itself: train_and_evaluate against a bare loop.

The bare loop is the least any trainer can do: one jitted step (the same model, optimizer and
batch shape) called on one fixed batch. `train_and_evaluate` adds the input pipeline, batch
assembly, metrics and the progress bar. Both run in this process on the same devices, and each
reports the median over windows of steps after compilation.
"""

import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import data, models, train
from attention_jax.train import config as config_lib
from attention_jax.train import metrics, optim, sharding, step


def bare_step_seconds(config, *, window: int, windows: int = 3, devices=None) -> float:
    """Median seconds per step of a bare jitted loop on one fixed batch (config: a ConfigDict).

    Same step function, shardings and donation as the trainer's.
    """
    config = train.from_config_dict(config)
    task = data.get_task(
        config.task, data_dir=config.data_dir, seq_len=config.seq_len, **config.task_params
    )
    model = models.build(config_lib.model_config_for(config, task), rngs=nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optim.make_optimizer(config.optimizer, config.num_steps)
    schedule = optim.learning_rate_schedule(config.optimizer, config.num_steps)
    mesh = sharding.make_mesh(config.mesh, devices)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "rest": rest,
        "opt_state": tx.init(params),
    }
    state_shardings = sharding.state_shardings(state, mesh)
    state = jax.device_put(state, state_shardings)
    train_step = jax.jit(
        step.make_train_step(graphdef, tx, schedule, task.kind, config.optimizer.grad_accum_steps),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
    local = next(iter(task.pipeline("train", batch_size=config.batch_size, prefetch=0)))
    batch = sharding.global_batch(local, mesh)
    for _ in range(2):
        state, out = train_step(state, batch)
    jax.block_until_ready(out)
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(window):
            state, out = train_step(state, batch)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / window)
    return statistics.median(times)


def trainer_step_seconds(config, *, window: int, windows: int = 3, devices=None) -> float:
    """Median seconds per step of train_and_evaluate over the windows after the first (which
    holds compilation); config is a ConfigDict."""
    config = config.copy_and_resolve_references()
    config.update(num_steps=window * (windows + 1), log_every=window, eval_every=10**9)
    config.checkpoint.every_steps = 10**9  # one save, after the timed steps
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir, devices=devices)
        records = [r for r in metrics.read_metrics(workdir) if "train/step_time_s" in r]
    return statistics.median(r["train/step_time_s"] for r in records[1:])
