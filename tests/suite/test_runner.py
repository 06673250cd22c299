"""The runner's bookkeeping with training and cost measurement replaced by scripted results:
rate choice, seeds, diverged runs, preemption, changed configs and stale costs."""

import json
import math
import os
from dataclasses import replace

import pytest

from attention_jax.configs import compare
from attention_jax.suite import cost, plan, report, runner
from attention_jax.train import config as config_lib
from attention_jax.train import trainer

# Validation and test accuracy by (kind, learning rate, seed); local prefers the larger rate.
SCORES = {
    ("dense", 3e-3, 0): 0.6,
    ("dense", 1e-2, 0): 0.5,
    ("dense", 3e-3, 1): 0.8,
    ("local", 3e-3, 0): 0.2,
    ("local", 1e-2, 0): 0.3,
    ("local", 1e-2, 1): 0.4,
}


@pytest.fixture
def scripted(monkeypatch):
    """Replaces training and cost measurement; returns the calls made."""
    calls = {"train": [], "task_cost": 0, "length_sweep": 0}

    def train(config, run_dir, devices=None, task=None):
        kind = os.path.basename(os.path.dirname(os.path.dirname(run_dir)))
        score = SCORES[kind, config.optimizer.learning_rate, config.seed]
        calls["train"].append((kind, config.optimizer.learning_rate, config.seed))
        results = {"validation/accuracy": score, "test/accuracy": score, "train/steps": 30}
        os.makedirs(run_dir, exist_ok=True)
        typed = config_lib.from_config_dict(config)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config_lib.to_json(typed), f)
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump(results, f)
        return results

    def task_cost(config, repeats, task):
        calls["task_cost"] += 1
        params = 1000 if config.model.attention == "dense" else 1200
        return dict(
            params=params,
            flops_per_token=1e5,
            train_step_ms=2.0,
            eval_step_ms=1.0,
            peak_memory_mib=3.0,
        )

    def length_sweep(kind, seq_lens, **settings):
        calls["length_sweep"] += 1
        power = kind.theory_exponent
        return [
            dict(n=n, fwd_s=n**power, fwd_bwd_s=n**power, fwd_bwd_bytes=n, fwd_flops=n**power)
            for n in seq_lens
        ]

    monkeypatch.setattr(trainer, "train_and_evaluate", train)
    monkeypatch.setattr(config_lib, "load_task", lambda config: None)  # no data is needed
    monkeypatch.setattr(cost, "task_cost", task_cost)
    monkeypatch.setattr(cost, "length_sweep", length_sweep)
    return calls


def _config(seeds=(0, 1)):
    config = compare.get_config("tiny")
    config.seeds = seeds
    return config


def test_best_rate_on_the_first_seed_then_every_seed_at_it(tmp_path, scripted):
    rows = runner.run_suite(_config(), str(tmp_path))
    by_kind = {(r["kind"], r["seed"]): r for r in rows}
    assert by_kind["dense", 0]["learning_rate"] == 3e-3 == by_kind["dense", 1]["learning_rate"]
    assert by_kind["local", 1]["learning_rate"] == 1e-2
    assert sorted(scripted["train"]) == sorted(SCORES)  # each run once, no other
    assert by_kind["local", 0]["params_vs_dense"] == pytest.approx(1.2)
    assert by_kind["dense", 0]["exponent_fwd_flops"] == pytest.approx(2.0)
    text = (tmp_path / "results.md").read_text()
    # dense: mean of 0.6 and 0.8, sample std 0.141; local: 0.3 and 0.4.
    assert "**0.700 ± 0.141**" in text and "0.350 ± 0.071" in text
    assert "⚠ 1.20× dense" in text


def test_a_diverged_seed_is_left_out_and_counted(tmp_path, scripted, monkeypatch):
    monkeypatch.setitem(SCORES, ("dense", 3e-3, 1), math.nan)
    runner.run_suite(_config(), str(tmp_path))
    assert "**0.600 ± —** (1/2 seeds)" in (tmp_path / "results.md").read_text()


def test_a_preempted_run_stops_the_suite(tmp_path, scripted, monkeypatch):
    monkeypatch.setattr(trainer, "train_and_evaluate", lambda *a, **k: {})
    with pytest.raises(runner.SuiteStopped, match="rerun to continue"):
        runner.run_suite(_config(), str(tmp_path))


def test_a_sweep_without_any_validation_score_is_refused(tmp_path, scripted, monkeypatch):
    for key in [("dense", 3e-3, 0), ("dense", 1e-2, 0)]:
        monkeypatch.setitem(SCORES, key, math.nan)
    with pytest.raises(ValueError, match="no learning rate gave a validation accuracy"):
        runner.run_suite(_config(), str(tmp_path))


def test_runs_of_a_changed_config_are_refused(tmp_path, scripted):
    runner.run_suite(_config(), str(tmp_path))
    changed = _config()
    changed.tasks.mqar_tiny.train.num_steps = 31
    with pytest.raises(ValueError, match="different config"):
        runner.run_suite(changed, str(tmp_path))


def test_costs_are_measured_again_only_when_their_settings_change(tmp_path, scripted):
    runner.run_suite(_config(), str(tmp_path))
    assert (scripted["task_cost"], scripted["length_sweep"]) == (2, 2)
    runner.run_suite(_config(), str(tmp_path))
    assert (scripted["task_cost"], scripted["length_sweep"]) == (2, 2)
    wider = _config()
    wider.cost.seq_lens = (64, 128, 256)
    runner.run_suite(wider, str(tmp_path))
    assert (scripted["task_cost"], scripted["length_sweep"]) == (2, 4)
    assert len(scripted["train"]) == len(SCORES)  # and nothing was trained again


def test_steps_to_target_is_the_first_validation_at_or_past_it(tmp_path):
    records = [
        {"step": 10, "train/loss": 3.0},
        {"step": 10, "validation/accuracy": 0.5, "validation/loss": 2.6},
        {"step": 20, "validation/accuracy": 0.91, "validation/loss": 2.4},
        {"step": 30, "validation/accuracy": 0.88, "validation/loss": 2.3},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tiny = plan.Suite.from_config(compare.get_config("tiny")).tasks[0]
    assert runner.steps_to_target(str(tmp_path), tiny) == 20  # target accuracy 0.9
    assert math.isnan(runner.steps_to_target(str(tmp_path), replace(tiny, target=0.95)))
    loss = replace(tiny, metric="loss", target=2.5)
    assert runner.steps_to_target(str(tmp_path), loss) == 20  # lower is better
    assert math.isnan(runner.steps_to_target(str(tmp_path), replace(tiny, target=None)))


def test_time_to_target_is_averaged_over_the_seeds_that_reached_it():
    rows = [
        dict(
            task="t",
            kind="k",
            seed=s,
            value=0.9,
            validation=0.9,
            steps_to_target=x,
            seconds_to_target=x * 0.01,
        )
        for s, x in enumerate([100.0, 300.0, math.nan])
    ]
    (summary,) = report.summarize(rows)
    assert (summary["reached"], summary["seeds"]) == (2, 3)
    assert summary["steps_to_target"] == 200 and summary["seconds_to_target"] == pytest.approx(2)
    assert report._time_to_target(summary, 2.0) == "200 (2/3) | **2.0**"
    none = report.summarize([{**rows[2], "seed": 0}])[0]
    assert report._time_to_target(none, None) == "not reached (0/1) | —"


def test_a_single_rate_trains_every_seed_in_the_first_group(tmp_path, scripted, monkeypatch):
    monkeypatch.setitem(SCORES, ("local", 3e-3, 1), 0.25)
    config = _config()
    config.learning_rates = (3e-3,)
    rows = runner.run_suite(config, str(tmp_path))
    assert sorted(scripted["train"]) == sorted(k for k in SCORES if k[1] == 3e-3)
    assert {(r["kind"], r["seed"], r["value"]) for r in rows} == {
        ("dense", 0, 0.6),
        ("dense", 1, 0.8),
        ("local", 0, 0.2),
        ("local", 1, 0.25),
    }


def test_a_kinds_learning_rate_scale_multiplies_every_rate_it_trains_at(
    tmp_path, scripted, monkeypatch
):
    monkeypatch.setitem(SCORES, ("local", 6e-3, 0), 0.5)
    monkeypatch.setitem(SCORES, ("local", 2e-2, 0), 0.1)
    config = _config(seeds=(0,))
    config.kinds.local.learning_rate_scale = 2.0
    rows = runner.run_suite(config, str(tmp_path))
    trained = {(kind, lr) for kind, lr, _ in scripted["train"]}
    assert trained == {("dense", 3e-3), ("dense", 1e-2), ("local", 6e-3), ("local", 2e-2)}
    assert [r["learning_rate"] for r in rows if r["kind"] == "local"] == [6e-3]


def test_a_non_positive_learning_rate_scale_is_refused():
    config = _config()
    config.kinds.local.learning_rate_scale = 0.0
    with pytest.raises(ValueError, match="learning_rate_scale must be > 0"):
        plan.Suite.from_config(config)
