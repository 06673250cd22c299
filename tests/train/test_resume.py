"""What a rerun of a workdir does: a changed config, an extended or damaged finished run,
unreadable or unwritable checkpoints, a divergence. Each is a way to publish a wrong number."""

import json
import os
import shutil

import numpy as np
import pytest

from attention_jax import train
from attention_jax.configs import mqar
from attention_jax.train import group, metrics


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def tiny(data_dir, **overrides):
    config = mqar.get_config("size=tiny")
    config.update(dict(data_dir=data_dir, num_steps=10, log_every=1, eval_every=100) | overrides)
    config.checkpoint.every_steps = 5
    return config


def train_losses(workdir):
    return {r["step"]: r["train/loss"] for r in metrics.read_metrics(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished 10-step run (checkpoints at 5 and 10) and its results; tests copy it."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    return workdir, train.train_and_evaluate(tiny(data_dir), str(workdir))


def copy_of(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished[0], workdir)
    return workdir


def test_a_changed_config_is_refused_before_anything_is_written(tmp_path, data_dir, finished):
    workdir = copy_of(finished, tmp_path)
    stored = (workdir / "config.json").read_bytes()
    other = tiny(data_dir, num_steps=20)
    other.optimizer.learning_rate = 0.5
    other.model.attention = "local"
    with pytest.raises(ValueError) as refused:
        train.train_and_evaluate(other, str(workdir))
    message = str(refused.value)
    for key in ("optimizer.learning_rate", "model.attention", "num_steps"):
        assert key in message
    assert "new workdir" in message and "--allow_changes=num_steps" in message
    assert (workdir / "config.json").read_bytes() == stored
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "5"]


def test_only_settings_that_change_no_step_may_be_allowed(tmp_path, data_dir, finished):
    workdir = copy_of(finished, tmp_path)
    other = tiny(data_dir)
    other.optimizer.learning_rate = 0.5
    with pytest.raises(ValueError, match=r"\['optimizer.learning_rate'\] change what the run"):
        train.train_and_evaluate(other, str(workdir), allow_changes=["optimizer.learning_rate"])


def test_an_extended_finished_run_trains_on_and_replaces_its_results(tmp_path, data_dir, finished):
    workdir = copy_of(finished, tmp_path)
    longer = tiny(data_dir, num_steps=15)
    results = train.train_and_evaluate(longer, str(workdir), allow_changes=["num_steps"])
    assert results["train/steps"] == 15
    assert json.loads((workdir / "results.json").read_text()) == results
    assert json.loads((workdir / "config.json").read_text())["num_steps"] == 15
    assert max(train_losses(workdir)) == 15
    # Steps 1-10 are the finished run's, untouched.
    assert {s: v for s, v in train_losses(workdir).items() if s <= 10} == train_losses(finished[0])


def test_a_finished_run_whose_final_checkpoint_was_lost_is_rebuilt(tmp_path, data_dir, finished):
    workdir = copy_of(finished, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "10")
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 10"):
        train.load_trained(str(workdir))  # never the older step 5 of a run marked finished
    results = train.train_and_evaluate(tiny(data_dir), str(workdir))
    for name, value in finished[1].items():
        assert results[name] == pytest.approx(value, rel=1e-5), name
    model, _, _ = train.load_trained(str(workdir))
    assert model is not None


def test_all_checkpoints_unreadable_restarts_the_whole_run_from_step_0(
    tmp_path, data_dir, finished
):
    workdir = copy_of(finished, tmp_path)
    for step in ("5", "10"):
        shutil.rmtree(workdir / "checkpoints" / step / "state")
    os.remove(workdir / "results.json")
    train.train_and_evaluate(tiny(data_dir), str(workdir))
    got, want = train_losses(workdir), train_losses(finished[0])
    np.testing.assert_allclose([got[s] for s in want], list(want.values()), rtol=1e-5)


def test_checkpoints_that_cannot_be_written_fail_at_once_with_the_path(tmp_path, data_dir):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("")  # a file where the directory must go
    with pytest.raises(ValueError, match="cannot be written to .*checkpoints"):
        train.train_and_evaluate(tiny(data_dir), str(workdir))


def test_a_diverging_run_stops_without_saving_the_diverged_state(tmp_path, data_dir):
    config = tiny(data_dir)
    config.optimizer.update(learning_rate=1e10, warmup_steps=0)
    with pytest.raises(train.Diverged, match="diverged by step") as stopped:
        train.train_and_evaluate(config, str(tmp_path))
    saved = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
    assert all(step < stopped.value.step for step in saved)
    assert not (tmp_path / "results.json").exists()


def test_a_diverged_group_member_is_marked_and_the_others_finish(tmp_path, data_dir):
    configs = [tiny(data_dir, seed=0), tiny(data_dir, seed=0)]
    configs[1].optimizer.learning_rate = 1e10
    workdirs = [str(tmp_path / "sane"), str(tmp_path / "diverged")]
    results = group.train_group(configs, workdirs, str(tmp_path / "group"))
    assert "train/diverged_at_step" not in results[0]
    assert np.isfinite(results[0]["test/loss"])
    assert results[1]["train/diverged_at_step"] >= 1
    stored = json.loads((tmp_path / "diverged" / "results.json").read_text())
    assert stored["train/diverged_at_step"] == results[1]["train/diverged_at_step"]
