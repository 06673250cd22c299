"""run_suite(config, workdir): train every kind on every task, measure cost, write the report.

Each run lives in runs/<task>/<kind>/lr<lr>/seed<seed>. A run with results.json is finished
and is read, not retrained; any other run resumes from its newest checkpoint. Costs are cached
as JSON under cost/. So re-running the same command after an interruption continues it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import jax
from tqdm.auto import tqdm

from attention_jax.suite import cost, plan, report
from attention_jax.train import config as config_lib
from attention_jax.train import trainer


class SuiteStopped(Exception):
    """A run stopped before its last step (SIGTERM): rerun the suite to continue it."""


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _train(config, run_dir: str, devices, tasks: dict) -> dict[str, float]:
    """The run's results: read when finished, else trained (resuming from a checkpoint).

    `tasks` holds the loaded task of each config.task, so a task's splits are read once.
    """
    written = os.path.join(run_dir, "config.json")
    typed = config_lib.from_config_dict(config)
    wanted = config_lib.to_json(typed)
    if os.path.exists(written) and _read_json(written) != wanted:
        raise ValueError(
            f"{run_dir} holds a run of a different config than the suite asks for now (the "
            "suite's task, kind or steps changed); use a new workdir or delete that run."
        )
    finished = os.path.join(run_dir, "results.json")
    if os.path.exists(finished):
        return _read_json(finished)
    results = trainer.train_and_evaluate(
        config, run_dir, devices=devices, task=_loaded_task(typed, tasks)
    )
    if "train/steps" not in results:
        raise SuiteStopped(f"{run_dir} stopped before its last step; rerun to continue.")
    return results


def _loaded_task(config: config_lib.TrainConfig, tasks: dict):
    """The config's task, loaded once per task, data_dir, seq_len and task_params."""
    key = json.dumps(
        [config.task, config.data_dir, config.seq_len, config.task_params], sort_keys=True
    )
    if key not in tasks:
        tasks[key] = config_lib.load_task(config)
    return tasks[key]


def _cached(path: str, inputs: dict, compute, *args, **kwargs):
    """compute(*args, **kwargs), stored at `path` with the `inputs` it was measured for.

    A stored value is reused only for the same inputs (settings, device), so a changed cost
    setting is measured afresh rather than reported under the new label.
    """
    inputs = json.loads(json.dumps(inputs, default=str))
    if os.path.exists(path):
        stored = _read_json(path)
        if isinstance(stored, dict) and stored.get("inputs") == inputs:
            return stored["value"]
    value = compute(*args, **kwargs)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"inputs": inputs, "value": value}, f, indent=2)
    os.replace(path + ".tmp", path)
    return value


def _score(results: dict, task: plan.TaskSpec, split: str) -> float:
    """The task metric on a split; NaN (a diverged run) ranks last."""
    value = results.get(f"{split}/{task.metric}", math.nan)
    return value if math.isfinite(value) else math.nan


def _best_learning_rate(sweep: dict[float, float], task: plan.TaskSpec) -> float:
    """The swept rate with the best validation score (ties: the smaller rate)."""
    if len(sweep) > 1 and all(math.isnan(v) for v in sweep.values()):
        raise ValueError(
            f"task {task.label}: no learning rate gave a validation {task.metric} (diverged, or "
            "the task has no validation split); sweep a single rate for it (its task entry's "
            "learning_rates) or lower the rates."
        )
    sign = -1.0 if task.higher_is_better else 1.0
    ranked = sorted(sweep, key=lambda lr: (math.isnan(sweep[lr]), sign * sweep[lr], lr))
    return ranked[0]


def run_suite(config, workdir: str, *, devices=None) -> list[dict]:
    """Runs the suite `config` in `workdir`; returns the rows of results.csv.

    Writes results.csv (one row per task, kind and seed at the chosen learning rate),
    sweep.csv (every run), results.md, quality_vs_cost.png and cost_vs_length.png.

    Args:
      config: a suite ConfigDict (experiments/configs/compare.py).
      workdir: where runs, cached costs, tables and plots go; rerunning continues.
      devices: the devices each training run shards over (default: all).
    """
    suite = plan.Suite.from_config(config)
    os.makedirs(workdir, exist_ok=True)
    sweep_rows, final, tasks = [], {}, {}
    pairs = list(suite.pairs())
    for task, kind in tqdm(pairs, desc="suite", unit="pair"):
        validation = {}
        for lr in task.learning_rates or suite.learning_rates:
            seed = suite.seeds[0]
            run_dir = plan.run_dir(workdir, task, kind, lr, seed)
            results = _train(plan.run_config(task, kind, lr, seed), run_dir, devices, tasks)
            validation[lr] = _score(results, task, "validation")
            sweep_rows.append(_sweep_row(task, kind, lr, seed, results))
        best = _best_learning_rate(validation, task)
        for seed in suite.seeds:
            run_dir = plan.run_dir(workdir, task, kind, best, seed)
            results = _train(plan.run_config(task, kind, best, seed), run_dir, devices, tasks)
            if seed != suite.seeds[0]:
                sweep_rows.append(_sweep_row(task, kind, best, seed, results))
            final[task.label, kind.label, seed] = (best, results)
        logging.info("%s / %s: best learning rate %g", task.label, kind.label, best)

    device = jax.devices()[0].device_kind
    costs = {}
    for task, kind in tqdm(pairs, desc="cost at task size", unit="pair"):
        best = final[task.label, kind.label, suite.seeds[0]][0]
        measured = plan.run_config(task, kind, best, suite.seeds[0])
        costs[task.label, kind.label] = _cached(
            os.path.join(workdir, "cost", "task", task.label, f"{kind.label}.json"),
            {"run": measured.to_dict(), "repeats": suite.cost["repeats"], "device": device},
            cost.task_cost,
            measured,
            repeats=suite.cost["repeats"],
            task=_loaded_task(config_lib.from_config_dict(measured), tasks),
        )
    sweeps = {}
    for kind in tqdm(suite.kinds, desc="cost over n", unit="kind"):
        sweeps[kind.label] = _cached(
            os.path.join(workdir, "cost", "length", f"{kind.label}.json"),
            {"kind": dataclasses.asdict(kind), "cost": suite.cost, "device": device},
            cost.length_sweep,
            kind,
            suite.cost["seq_lens"],
            d_model=suite.cost["d_model"],
            num_heads=suite.cost["num_heads"],
            repeats=suite.cost["repeats"],
        )
    rows = [
        _result_row(suite, task, kind, seed, *final[task.label, kind.label, seed], costs, sweeps)
        for task, kind in pairs
        for seed in suite.seeds
    ]
    report.write_all(workdir, suite, rows, sweep_rows, sweeps, device=device)
    return rows


def _sweep_row(task, kind, lr, seed, results) -> dict:
    return {
        "task": task.label,
        "kind": kind.label,
        "learning_rate": lr,
        "seed": seed,
        "metric": task.metric,
        "validation": _score(results, task, "validation"),
        "test": _score(results, task, "test"),
    }


def _result_row(suite, task, kind, seed, lr, results, costs, sweeps) -> dict:
    dense_params = costs.get((task.label, "dense"), {}).get("params")
    measured = costs[task.label, kind.label]
    return {
        "task": task.label,
        "kind": kind.label,
        "seed": seed,
        "learning_rate": lr,
        "metric": task.metric,
        "value": _score(results, task, "test"),
        "validation": _score(results, task, "validation"),
        **measured,
        "params_vs_dense": measured["params"] / dense_params if dense_params else math.nan,
        **cost.exponents(sweeps[kind.label]),
        "theory_exponent": kind.theory_exponent,
    }
