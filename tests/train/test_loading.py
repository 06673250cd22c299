"""load_trained rebuilds a finished run's model: it reproduces the run's own test metrics."""

import jax
import pytest
from flax import nnx

from attention_jax import train
from attention_jax.configs import mqar
from attention_jax.train import sharding, step


def test_loaded_model_reproduces_the_runs_test_metrics(tmp_path):
    config = mqar.get_config("size=tiny")
    config.data_dir = str(tmp_path / "tfds")
    workdir = str(tmp_path / "run")
    devices = jax.devices()[:1]
    results = train.train_and_evaluate(config, workdir, devices=devices)

    model, task, loaded_config = train.load_trained(workdir)
    assert loaded_config.task == config.task and loaded_config.num_steps == config.num_steps
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    eval_step = jax.jit(step.make_eval_step(graphdef, task.kind))
    mesh = sharding.make_mesh(sharding.MeshConfig(), devices)
    metrics = train.evaluate(
        eval_step, {"params": params, "rest": rest}, task, "test", mesh, config.batch_size
    )
    assert metrics["test/accuracy"] == pytest.approx(results["test/accuracy"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(results["test/loss"], rel=1e-5)


def test_a_directory_without_a_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        train.load_trained(str(tmp_path))
