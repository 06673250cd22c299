"""Suite planning (fair run configs, checks before training) and the report's arithmetic."""

import itertools
import math

import ml_collections
import numpy as np
import pytest

from attention_jax.configs import compare
from attention_jax.suite import plan, report, runner


def _suite(name="tiny", **changes):
    config = compare.get_config(name)
    for key, value in changes.items():
        config[key] = value
    return config


def test_every_suite_config_is_checked_and_fair():
    for name in compare.SUITES:
        suite = plan.Suite.from_config(_suite(name))
        for task in suite.tasks:
            configs = [
                plan.run_config(task, kind, suite.learning_rates[0], suite.seeds[0]).to_dict()
                for kind in suite.kinds
                if plan.skip_reason(task, kind) is None
            ]
            # Only the attention differs between kinds on a task (the short convolution on
            # q, k and v is part of a state-carrying kind's layer).
            for config in configs:
                for field in ("attention", "kind_params", "moe_attention", "short_conv"):
                    config["model"].pop(field)
            assert all(c == configs[0] for c in configs), (name, task.label)


def test_cpu_suite_has_the_issued_tasks_and_kinds():
    suite = plan.Suite.from_config(_suite("cpu"))
    assert [t.label for t in suite.tasks] == ["chars_256", "mqar_64_4"]
    assert {k.label for k in suite.kinds} == {
        "dense",
        "flash",
        "local",
        "bigbird",
        "linear",
        "performer",
        "based",
        "linformer",
        "moba",
        "switchhead",
        "retnet",
        "gla",
        "mamba2",
        "deltanet",
        "gated_deltanet",
        "gated_deltanet_dense",
    }
    hybrid = next(k for k in suite.kinds if k.label == "gated_deltanet_dense")
    assert hybrid.attention == ("gated_deltanet", "dense") and hybrid.theory_exponent == 2.0
    assert len(suite.seeds) >= 2
    for task in suite.tasks:
        assert task.train.model.d_model == 64
        assert task.target is not None and task.train.eval_every < task.train.num_steps
    # Recall is judged where the literature's separation shows: MQAR (64, 4), local attention
    # seeing fewer keys back than most key-query gaps.
    mqar = next(t for t in suite.tasks if t.label == "mqar_64_4")
    assert (mqar.train.seq_len or 64, mqar.train.optimizer.schedule) == (64, "constant")
    local = next(k for k in suite.kinds if k.label == "local")
    assert local.kind_params["local_window_size"][0] < 64 // 2


def test_linformer_is_skipped_on_causal_tasks_only():
    suite = plan.Suite.from_config(_suite("lra"))
    linformer = next(k for k in suite.kinds if k.label == "linformer")
    assert plan.skip_reason(suite.tasks[0], linformer) is None  # classification
    cpu = plan.Suite.from_config(_suite("cpu"))
    task = next(t for t in cpu.tasks if t.label == "mqar_64_4")
    assert plan.skip_reason(task, linformer) == "linformer is not causal"
    assert ("mqar_64_4", "linformer") not in {(t.label, k.label) for t, k in cpu.pairs()}


def test_run_config_changes_attention_rate_and_model_seed_but_not_the_data():
    suite = plan.Suite.from_config(_suite("cpu"))
    task = next(t for t in suite.tasks if t.label == "mqar_64_4")
    switchhead = next(k for k in suite.kinds if k.label == "switchhead")
    config = plan.run_config(task, switchhead, 1e-2, 1)
    assert config.model.attention == "dense"
    assert config.model.moe_attention.to_dict() == {"num_experts": 4, "top_k": 2}
    assert config.optimizer.learning_rate == 1e-2 and config.seed == 1
    assert config.task_params.seed == task.train.task_params.seed
    assert (
        plan.run_dir("W", task, switchhead, 1e-2, 1) == "W/runs/mqar_64_4/switchhead/lr0.01/seed1"
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"seeds": (0, 0)}, "distinct seeds"),
        ({"learning_rates": ()}, "learning rates"),
        ({"kinds": {"dense": {"atention": "dense"}}}, "unknown keys"),
        ({"kinds": {"mystery": {}}}, "unknown attention kind 'mystery'"),
        ({"kinds": {"x": {"attention": "dense", "moe_attention": {"top_k": 2}}}}, "num_experts"),
        (
            {"kinds": {"x": {"attention": "performer", "moe_attention": {"num_experts": 2}}}},
            "does not support",
        ),
    ],
)
def test_bad_suites_fail_before_training(changes, match):
    config = _suite(**changes)
    with pytest.raises(ValueError, match=match):
        plan.Suite.from_config(config)


def test_bad_metric_is_refused():
    config = _suite()
    config.tasks.mqar_tiny.metric = "f1"
    with pytest.raises(ValueError, match="metric must be one of"):
        plan.Suite.from_config(config)


def test_suite_data_dir_reaches_every_run(tmp_path):
    suite = plan.Suite.from_config(_suite(data_dir=str(tmp_path)))
    for task, kind in suite.pairs():
        assert plan.run_config(task, kind, 1e-3, 0).data_dir == str(tmp_path)


def _task(metric):
    train = ml_collections.ConfigDict({"model": {"name": "lm"}})
    return plan.TaskSpec("t", train, metric)


def test_best_learning_rate_ranks_by_metric_direction_with_nan_last():
    sweep = {1e-3: 0.5, 3e-3: 0.9, 1e-2: math.nan}
    assert runner._best_learning_rate(sweep, _task("accuracy")) == 3e-3
    assert runner._best_learning_rate(sweep, _task("loss")) == 1e-3
    assert runner._best_learning_rate({1e-3: 0.5, 3e-3: 0.5}, _task("accuracy")) == 1e-3
    assert runner._best_learning_rate({1e-3: math.nan, 3e-3: 2.0}, _task("loss")) == 3e-3


def _brute_force_front(points, higher_is_better):
    sign = 1 if higher_is_better else -1

    def dominated(p):
        return any(
            q[0] <= p[0] and sign * q[1] >= sign * p[1] and (q[0], q[1]) != (p[0], p[1])
            for q in points
        )

    return sorted((p for p in points if not dominated(p)), key=lambda p: p[0])


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_pareto_front_matches_brute_force(higher_is_better):
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = [
            (float(x), float(y), f"k{i}")
            for i, (x, y) in enumerate(rng.integers(0, 6, size=(8, 2)))
        ]
        got = report._pareto(points, higher_is_better)
        want = _brute_force_front(points, higher_is_better)
        # Exact duplicates keep one representative.
        assert [(x, y) for x, y, _ in got] == list(dict.fromkeys((x, y) for x, y, _ in want))


def test_summary_is_the_mean_and_sample_std_over_seeds():
    values = [0.5, 0.7, 0.9]
    rows = [{"task": "t", "kind": "k", "seed": s, "value": v} for s, v in enumerate(values)]
    rows.append({"task": "t", "kind": "one", "seed": 0, "value": 0.3})
    summary = {s["kind"]: s for s in report.summarize(rows)}
    assert summary["k"]["mean"] == pytest.approx(np.mean(values))
    assert summary["k"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["k"]["seeds"] == 3
    assert summary["one"]["mean"] == 0.3 and math.isnan(summary["one"]["std"])


def test_params_off_dense_are_flagged():
    suite = plan.Suite.from_config(_suite())
    row = dict(
        task="mqar_tiny",
        learning_rate=1e-3,
        value=0.5,
        flops_per_token=1e6,
        train_step_ms=1.0,
        eval_step_ms=1.0,
        peak_memory_mib=1.0,
        exponent_fwd_bwd_s=1.0,
        theory_exponent=1.0,
    )
    rows = [
        {**row, "kind": kind, "seed": 0, "params": params, "params_vs_dense": params / 1000}
        for kind, params in [("dense", 1000), ("close", 1090), ("far", 1200)]
    ]
    lines = report.task_table(suite.tasks[0], report.summarize(rows))
    by_kind = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert "⚠" not in by_kind["dense"] and "⚠" not in by_kind["close"]
    assert "⚠ 1.20× dense" in by_kind["far"]


def test_zoology_covers_figure_two():
    suite = plan.Suite.from_config(_suite("zoology"))
    got = {(t.train.task, t.train.model.d_model) for t in suite.tasks}
    expected = itertools.product(compare.ZOOLOGY_SIZES, (64, 128, 256, 512))
    assert got == {(f"mqar/s{n}_kv{kv}", d) for (n, kv), d in expected}


def test_quick_is_the_first_seed_of_cpu_so_cpu_reuses_its_runs():
    quick, cpu = (plan.Suite.from_config(_suite(name)) for name in ("quick", "cpu"))
    assert quick.seeds == cpu.seeds[:1] and quick.kinds == cpu.kinds
    for task in quick.tasks:
        same = next(t for t in cpu.tasks if t.label == task.label)
        assert task.train.to_dict() == same.train.to_dict()
