"""Every training config, at every size, becomes a checked TrainConfig and model for its task."""

import importlib
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from attention_jax import data, train
from attention_jax.configs import common
from attention_jax.train import config as train_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ["mqar", "listops", "copying", "induction", "lm_chars", "text", "image"]


@pytest.mark.parametrize("size", common.SIZES)
@pytest.mark.parametrize("name", CONFIGS)
def test_config_resolves_to_a_model_for_its_task(name, size, tmp_path):
    module = importlib.import_module(f"attention_jax.configs.{name}")
    config = train.from_config_dict(module.get_config(f"size={size},kind=local"))
    task = data.get_task(
        config.task, data_dir=str(tmp_path), seq_len=config.seq_len, **config.task_params
    )
    model = train_config.model_config_for(config, task)
    assert model.vocab_size == task.vocab_size and model.max_len == task.seq_len
    assert model.attention == "local"
    assert config.batch_size % 8 == 0  # splits over the 8 test devices


@pytest.mark.parametrize(
    "arg, match",
    [
        ("kind=dense,sise=small", "unknown config argument 'sise'"),
        ("size=huge", "size must be one of"),
        ("seq_len=long", "seq_len must be int"),
        ("selective=maybe", "selective must be true or false"),
        ("dense", "is not key=value"),
        ("tokenization=bpe", "tokenization must be one of"),
    ],
)
def test_bad_arguments_are_refused(arg, match):
    from attention_jax.configs import copying, listops, mqar

    module = copying if "selective" in arg else listops if "tokenization" in arg else mqar
    with pytest.raises(ValueError, match=match):
        module.get_config(arg)


def test_real_dataset_config_trains_under_mock_data(tmp_path):
    from attention_jax.configs import text

    config = text.get_config("size=tiny")
    config.update(num_steps=4, eval_every=100, data_dir=str(tmp_path / "tfds"))
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert "test/accuracy" in results and "validation/accuracy" not in results


def test_command_line_entry_point_with_overrides(tmp_path):
    # A separate process: each entry point defines the same absl flags.
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/mqar.py:size=tiny",
        f"--config.data_dir={tmp_path / 'tfds'}",
        "--config.num_steps=3",
        "--config.optimizer.learning_rate=3e-3",
        f"--workdir={tmp_path / 'run'}",
    ]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = (tmp_path / "run" / "config.json").read_text()
    assert '"learning_rate": 0.003' in saved and '"num_steps": 3' in saved


def test_paper_faithful_variants_reach_the_task_and_the_suites():
    """Zero MQAR fillers and LRA's ListOps tokenization are task parameters the accelerator
    suites use; the defaults leave task_params (and dataset names) as they were."""
    from attention_jax.configs import compare, listops, mqar

    assert mqar.get_config("random_fillers=false").task_params.random_fillers is False
    assert "random_fillers" not in mqar.get_config("").task_params
    assert listops.get_config("tokenization=lra").task_params.tokenization == "lra"
    assert "tokenization" not in listops.get_config("").task_params
    zoology = compare.get_config("zoology").tasks
    assert all(t.train.task_params.random_fillers is False for t in zoology.values())
    lra = compare.get_config("lra").tasks
    assert lra["listops_2k"].train.task_params.tokenization == "lra"
