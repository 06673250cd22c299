"""train_group: seeds and learning rates of one run trained as one vmapped program."""

import json

import jax
import numpy as np
import pytest

from attention_jax import train
from attention_jax.configs import mqar
from attention_jax.train import group, metrics

RATES_SEEDS = ((1e-2, 0), (3e-3, 1))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def tiny(data_dir, learning_rate, seed):
    config = mqar.get_config(f"size=tiny,seed={seed}")
    config.task_params.seed = 0  # one task for every member, as in a suite
    config.update(data_dir=data_dir, seed=seed, num_steps=12, eval_every=6, log_every=3)
    config.optimizer.learning_rate = learning_rate
    config.checkpoint.every_steps = 6
    return config


def losses(workdir):
    return {r["step"]: r["train/loss"] for r in metrics.read_metrics(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def separate(tmp_path_factory, data_dir):
    """Each member trained alone on one device, as the reference."""
    root = tmp_path_factory.mktemp("separate")
    runs = {}
    for lr, seed in RATES_SEEDS:
        workdir = str(root / f"{lr}_{seed}")
        config = tiny(data_dir, lr, seed)
        runs[lr, seed] = (
            train.train_and_evaluate(config, workdir, devices=jax.devices()[:1]),
            workdir,
        )
    return runs


def test_group_equals_separate_runs(tmp_path, data_dir, separate):
    configs = [tiny(data_dir, lr, seed) for lr, seed in RATES_SEEDS]
    workdirs = [str(tmp_path / f"member{i}") for i in range(len(configs))]
    results = group.train_group(configs, workdirs, str(tmp_path / "group"))
    for (lr, seed), workdir, got in zip(RATES_SEEDS, workdirs, results):
        want, want_dir = separate[lr, seed]
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=2e-4)
        mine, theirs = losses(workdir), losses(want_dir)
        assert mine.keys() == theirs.keys()
        np.testing.assert_allclose(list(mine.values()), list(theirs.values()), rtol=2e-4)
        written = json.loads((tmp_path / workdir / "config.json").read_text())
        assert written["seed"] == seed and written["optimizer"]["learning_rate"] == lr
        assert json.loads((tmp_path / workdir / "results.json").read_text()) == got
    # The members really differ: different seeds and rates give different trajectories.
    assert results[0]["test/loss"] != results[1]["test/loss"]


def test_stopped_group_resumes_where_it_stopped(tmp_path, data_dir):
    configs = [tiny(data_dir, lr, seed) for lr, seed in RATES_SEEDS]
    straight = [str(tmp_path / f"straight{i}") for i in range(2)]
    want = group.train_group(configs, straight, str(tmp_path / "straight"))
    split = [str(tmp_path / f"split{i}") for i in range(2)]
    assert group.train_group(configs, split, str(tmp_path / "split"), stop_after_steps=6) == [
        {},
        {},
    ]
    assert max(losses(split[0])) == 6
    got = group.train_group(configs, split, str(tmp_path / "split"))
    for a, b, x, y in zip(got, want, split, straight):
        np.testing.assert_allclose([a[k] for k in b], list(b.values()), rtol=1e-6)
        np.testing.assert_allclose(list(losses(x).values()), list(losses(y).values()), rtol=1e-6)


def test_group_refuses_members_that_differ_in_more_than_seed_and_rate(tmp_path, data_dir):
    configs = [tiny(data_dir, 1e-2, 0), tiny(data_dir, 1e-2, 1)]
    configs[1].num_steps = 20
    with pytest.raises(ValueError, match=r"differs from config 0 in \['num_steps'\]"):
        group.train_group(configs, [str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path))


def test_group_refuses_a_checkpoint_of_other_members(tmp_path, data_dir):
    configs = [tiny(data_dir, 1e-2, 0)]
    group.train_group(configs, [str(tmp_path / "a")], str(tmp_path / "g"), stop_after_steps=3)
    # Another member for the same group directory (the run in "a" keeps its own refusal).
    with pytest.raises(ValueError, match="holds a group of other runs"):
        group.train_group([tiny(data_dir, 3e-3, 0)], [str(tmp_path / "b")], str(tmp_path / "g"))
    with pytest.raises(ValueError, match="holds a run of another config"):
        group.train_group([tiny(data_dir, 3e-3, 0)], [str(tmp_path / "a")], str(tmp_path / "g"))


@pytest.mark.parametrize(
    "change, workdirs, match",
    [
        (None, 1, "2 configs but 1 workdirs"),
        ({"mesh": {"data": 1, "fsdp": 2, "tensor": 1, "expert": 1}}, 2, "runs on one device"),
        ({"distributed": True}, 2, "runs on one device"),
    ],
    ids=["workdirs", "sharded_mesh", "distributed"],
)
def test_group_refuses_what_it_cannot_train(tmp_path, data_dir, change, workdirs, match):
    configs = [tiny(data_dir, 1e-2, 0), tiny(data_dir, 1e-2, 1)]
    for config in configs:
        config.update(change or {})
    dirs = [str(tmp_path / f"m{i}") for i in range(workdirs)]
    with pytest.raises(ValueError, match=match):
        group.train_group(configs, dirs, str(tmp_path / "g"))
