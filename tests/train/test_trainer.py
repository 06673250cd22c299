"""train_and_evaluate end to end on a tiny MQAR config: learning, files, resume, bad configs."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from attention_jax import train
from attention_jax.configs import mqar
from attention_jax.train import metrics


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def tiny(data_dir, **overrides):
    config = mqar.get_config("size=tiny")
    config.data_dir = data_dir
    config.update(overrides)
    return config


def train_losses(workdir):
    return {r["step"]: r["train/loss"] for r in metrics.read_metrics(workdir) if "train/loss" in r}


def test_tiny_run_learns_evaluates_and_writes_its_files(tmp_path, data_dir):
    results = train.train_and_evaluate(tiny(data_dir), str(tmp_path))
    losses = train_losses(tmp_path)
    assert losses[30] < losses[5] - 0.3
    assert set(results) >= {"validation/loss", "validation/accuracy", "test/loss", "test/accuracy"}
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "mqar/small_s64_kv4"
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20", "30"]
    records = metrics.read_metrics(tmp_path)
    assert any("validation/loss" in r and r["step"] == 15 for r in records)
    assert all(r["train/tokens_per_s"] > 0 for r in records if "train/tokens_per_s" in r)


def test_stopped_and_resumed_run_continues_bit_for_bit(tmp_path, data_dir):
    config = tiny(data_dir, log_every=1)
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
    assert train.train_and_evaluate(config, str(tmp_path / "split"), stop_after_steps=13) == {}
    assert max(train_losses(tmp_path / "split")) == 13
    resumed = train.train_and_evaluate(config, str(tmp_path / "split"))
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    assert resumed == straight


def test_unreadable_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, data_dir, caplog):
    config = tiny(data_dir, log_every=1)
    train.train_and_evaluate(config, str(tmp_path / "straight"))
    train.train_and_evaluate(config, str(tmp_path / "run"), stop_after_steps=20)
    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.rmtree(checkpoints / "20" / "state")  # a lost or truncated step
    (checkpoints / "25.orbax-checkpoint-tmp").mkdir()  # a write that never finished
    resumed = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert "step 20" in caplog.text and "cannot be read" in caplog.text
    assert (checkpoints / "20.unreadable").is_dir()
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "straight")
    assert resumed["test/loss"] == pytest.approx(
        json.loads((tmp_path / "straight" / "results.json").read_text())["test/loss"], abs=0
    )


MESHES = {
    "data8": dict(data=8),
    "fsdp2_data4": dict(data=4, fsdp=2),
    "tensor2_data4": dict(data=4, tensor=2),
}


@pytest.mark.parametrize("mesh", list(MESHES), ids=list(MESHES))
def test_sharded_runs_follow_the_single_device_trajectory(tmp_path, data_dir, mesh):
    config = tiny(data_dir, num_steps=5, log_every=1, eval_every=100)
    config.model.update(d_model=32, num_heads=4, mlp_dim=64)
    one = train.train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
    config.mesh.update(MESHES[mesh])
    many = train.train_and_evaluate(config, str(tmp_path / "many"))
    want, got = train_losses(tmp_path / "one"), train_losses(tmp_path / "many")
    np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=2e-5)
    assert many["test/loss"] == pytest.approx(one["test/loss"], rel=2e-5)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c.model.update(attention="nope"), "nope"),
        (lambda c: c.update(batch_size=12), "not divisible by the 8 data-parallel devices"),
        (lambda c: c.mesh.update(data=4, tensor=4), "needs a multiple of 16 devices"),
        (lambda c: c.mesh.update(data=2, tensor=2), "uses 4 devices, but 8 are available"),
        (lambda c: c.optimizer.update(name="sgd"), "optimizer.name must be one of"),
        (lambda c: c.update(num_steps=0), "must be >= 1"),
        (lambda c: c.model.update(name="vit"), "next-token task; use model.name 'lm'"),
        (lambda c: c.update(task="nope/x"), "Unknown task 'nope'"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, data_dir, change, match):
    config = tiny(data_dir)
    change(config)
    with pytest.raises(ValueError, match=match):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_config_keys_are_named(data_dir):
    config = tiny(data_dir)
    config.optimizer.lr = 0.1
    with pytest.raises(ValueError, match=r"config.optimizer: unknown keys \['lr'\]"):
        train.from_config_dict(config)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, data_dir):
    config = tiny(data_dir, num_steps=5, log_every=1, eval_every=100)
    train.train_and_evaluate(config, str(tmp_path / "whole"))
    config.optimizer.grad_accum_steps = 2
    train.train_and_evaluate(config, str(tmp_path / "accumulated"))
    want, got = train_losses(tmp_path / "whole"), train_losses(tmp_path / "accumulated")
    # MQAR scores the same number of positions in every example, so the mean of microbatch
    # means is the batch mean.
    np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=2e-5)


def test_classification_task_trains_through_the_same_loop(tmp_path, data_dir):
    from attention_jax.configs import listops

    config = listops.get_config("size=tiny")
    config.update(data_dir=data_dir, num_steps=10, eval_every=100)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert 0 <= results["test/accuracy"] <= 1 and np.isfinite(results["test/loss"])


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path, data_dir):
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/mqar.py:size=tiny",
        f"--config.data_dir={data_dir}",
        "--config.num_steps=100000",
        "--config.log_every=1",
        f"--workdir={workdir}",
    ]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    process = subprocess.Popen(command, cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (workdir / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    # Libraries' INFO logs (orbax: several lines a checkpoint) stay off at the default level.
    assert not re.search(r"^I\d{4} ", stderr, re.MULTILINE), stderr[-2000:]
    saved = [int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit()]
    assert saved and 0 < max(saved) < 100000 and not (workdir / "results.json").exists()
    assert max(train_losses(workdir)) == max(saved)
    config = tiny(data_dir, num_steps=100000, log_every=1)
    train.train_and_evaluate(config, str(workdir), stop_after_steps=2)
    assert max(train_losses(workdir)) == max(saved) + 2


def test_checkpoints_of_other_arrays_are_refused_and_kept(tmp_path, data_dir):
    """Even with config.json gone, a checkpoint of another model is never overwritten."""
    train.train_and_evaluate(tiny(data_dir, num_steps=10), str(tmp_path))
    os.remove(tmp_path / "config.json")
    wider = tiny(data_dir, num_steps=20)
    wider.model.d_model = 64
    with pytest.raises(ValueError, match="holds different arrays than this config"):
        train.train_and_evaluate(wider, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]


def test_accumulation_weights_microbatches_by_their_scored_tokens(tmp_path, data_dir):
    """Packed text scores a different number of tokens in each microbatch."""
    from attention_jax.configs import lm_chars

    config = lm_chars.get_config("size=tiny")
    config.update(data_dir=data_dir, num_steps=3, log_every=1, eval_every=100)
    train.train_and_evaluate(config, str(tmp_path / "whole"))
    config.optimizer.grad_accum_steps = 2
    train.train_and_evaluate(config, str(tmp_path / "accumulated"))
    want, got = train_losses(tmp_path / "whole"), train_losses(tmp_path / "accumulated")
    np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=2e-5)


def test_rerunning_a_finished_run_changes_nothing(tmp_path, data_dir):
    config = tiny(data_dir, num_steps=10)
    first = train.train_and_evaluate(config, str(tmp_path))
    records = metrics.read_metrics(tmp_path)
    assert train.train_and_evaluate(config, str(tmp_path)) == first
    assert metrics.read_metrics(tmp_path) == records


def test_bfloat16_compute_trains(tmp_path, data_dir):
    config = tiny(data_dir, num_steps=10, log_every=1, eval_every=100)
    config.model.dtype = "bfloat16"
    results = train.train_and_evaluate(config, str(tmp_path))
    losses = train_losses(tmp_path)
    assert np.isfinite(results["test/loss"]) and losses[10] < losses[1]


def test_moe_model_trains_and_logs_its_routing(tmp_path, data_dir):
    config = tiny(data_dir, num_steps=4, log_every=1, eval_every=100)
    config.model.moe = {"num_experts": 4, "top_k": 2, "every_n_layers": 1, "dispatch": "sort"}
    train.train_and_evaluate(config, str(tmp_path))
    logged = metrics.read_metrics(tmp_path)[-2]
    assert {
        "train/moe_load_balancing_loss",
        "train/moe_z_loss",
        "train/moe_dropped_fraction",
        "train/moe_aux_loss",
    } <= set(logged)
    config.model.moe = {"num_experts": 4, "top_kk": 2}
    with pytest.raises(ValueError, match="unknown"):
        train.train_and_evaluate(config, str(tmp_path / "bad"))


def test_expert_parallel_moe_run_follows_the_single_device_trajectory(tmp_path, data_dir):
    config = tiny(data_dir, num_steps=4, log_every=1, eval_every=100)
    # 16 x 64 tokens per step in 8 routing groups, so groups split over 2 expert devices.
    config.model.moe = {"num_experts": 4, "top_k": 2, "every_n_layers": 1, "group_size": 128}
    one = train.train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
    config.mesh.update(data=4, expert=2)
    many = train.train_and_evaluate(config, str(tmp_path / "many"))
    want, got = train_losses(tmp_path / "one"), train_losses(tmp_path / "many")
    np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=2e-5)
    assert many["test/loss"] == pytest.approx(one["test/loss"], rel=2e-5)
