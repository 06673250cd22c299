"""Does data keep up? Time to generate a task, and time a training step waits for its batch.

`measure_input_wait` trains a small model on a task's pipeline and splits each step's wall time
into waiting for `next(iterator)` and computing the step, so "the input pipeline keeps up" is a
measured fraction, not a hope. It also reports the pipeline's own rate with no model attached.
"""

import dataclasses
import itertools
import shutil
import tempfile
import time

import jax
import numpy as np
import optax
from flax import nnx

from attention_jax import data, models
from attention_jax.models import config as config_lib
from attention_jax.train import step


def time_generation(name: str, **overrides) -> tuple[float, int]:
    """Seconds to generate and write every split of a generated task, into a scratch directory.

    Returns (seconds, number of train examples).
    """
    data_dir = tempfile.mkdtemp(prefix="attention_jax_gen_")
    try:
        builder = data.generated_builder(name, data_dir=data_dir, **overrides)
        start = time.perf_counter()
        builder.download_and_prepare()
        seconds = time.perf_counter() - start
        return seconds, builder.info.splits["train"].num_examples
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def small_model_for(task: data.Task, *, d_model: int = 64, num_layers: int = 2):
    """A small dense-attention model of the right family for a task."""
    sizes = dict(d_model=d_model, num_heads=4, mlp_dim=4 * d_model, num_layers=num_layers)
    if task.kind == "classification":
        config = config_lib.ClassifierConfig(
            vocab_size=task.vocab_size,
            max_len=task.seq_len,
            num_classes=task.num_classes,
            pooling="mean",
            **sizes,
        )
    else:
        config = config_lib.LanguageModelConfig(
            vocab_size=task.vocab_size, max_len=task.seq_len, **sizes
        )
    return models.build(config, rngs=nnx.Rngs(0))


@dataclasses.dataclass(frozen=True)
class InputWait:
    task: str
    batch_size: int
    steps: int
    step_ms: float  # mean compute time of a training step
    wait_ms: float  # mean time the step waited for its batch
    pipeline_batches_per_s: float  # the pipeline alone, no model

    @property
    def wait_fraction(self) -> float:
        return self.wait_ms / (self.wait_ms + self.step_ms)


def measure_input_wait(task: data.Task, *, batch_size: int, steps: int = 50, warmup: int = 3):
    """Trains a small model for `steps` on the task and times data waits against compute."""
    model = small_model_for(task)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch):
        def loss_fn(model):
            return step.model_outputs(model, batch, task.kind, deterministic=True)[0]

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    iterator = iter(task.pipeline("train", batch_size=batch_size, seed=0))
    for batch in itertools.islice(iterator, warmup):
        jax.block_until_ready(train_step(model, optimizer, batch))
    waits, computes = [], []
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(iterator)
        fetched = time.perf_counter()
        jax.block_until_ready(train_step(model, optimizer, batch))
        waits.append(fetched - start)
        computes.append(time.perf_counter() - fetched)

    alone = iter(task.pipeline("train", batch_size=batch_size, seed=1, prefetch=0))
    next(alone)
    start = time.perf_counter()
    for _ in range(steps):
        next(alone)
    rate = steps / (time.perf_counter() - start)
    return InputWait(
        task=task.name,
        batch_size=batch_size,
        steps=steps,
        step_ms=1e3 * float(np.mean(computes)),
        wait_ms=1e3 * float(np.mean(waits)),
        pipeline_batches_per_s=rate,
    )
