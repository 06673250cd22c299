"""run_suite(config, workdir): train every kind on every task, measure cost, write the report.

Each run lives in runs/<task>/<kind>/lr<lr>/seed<seed>. A run with results.json is finished
and is read, not retrained. On one device the runs of a (task, kind) train as vmapped groups:
first every learning rate on the first seed, then the other seeds at the best rate (with one
rate, every seed at once); a group resumes from its checkpoint under runs/<task>/<kind>/groups/
(on several devices, each run from its own). Costs are cached as JSON under cost/. So re-running
the same command after an interruption continues it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import jax
from tqdm.auto import tqdm

from attention_jax import ops
from attention_jax.suite import cost, plan, report
from attention_jax.train import config as config_lib
from attention_jax.train import group, metrics, trainer


class SuiteStopped(Exception):
    """A run stopped before its last step (SIGTERM): rerun the suite to continue it."""


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _finished(config, run_dir: str) -> dict[str, float] | None:
    """The run's results if it finished; None if it must train (or resume)."""
    written = os.path.join(run_dir, "config.json")
    if os.path.exists(written) and _read_json(written) != config_lib.to_json(config):
        raise ValueError(
            f"{run_dir} holds a run of a different config than the suite asks for now (the "
            "suite's task, kind or steps changed); use a new workdir or delete that run."
        )
    finished = os.path.join(run_dir, "results.json")
    return _read_json(finished) if os.path.exists(finished) else None


def _train_runs(workdir, task, kind, members, devices, tasks: dict) -> dict:
    """{(lr, seed): results} of `members`: read when finished, else trained.

    On one device the unfinished members train together as one vmapped program
    (`train.group`, compiled once, checkpointed under runs/<task>/<kind>/groups/); on several,
    each trains alone, sharded over them. `tasks` holds the loaded task of each config.task, so
    a task's splits are read once.
    """
    configs = {m: plan.run_config(task, kind, *m) for m in members}
    dirs = {m: plan.run_dir(workdir, task, kind, *m) for m in members}
    results = {m: _finished(config_lib.from_config_dict(configs[m]), dirs[m]) for m in members}
    pending = [m for m in members if results[m] is None]
    if not pending:
        return results
    loaded = _loaded_task(config_lib.from_config_dict(configs[pending[0]]), tasks)
    if len(devices or jax.devices()) == 1:
        name = "+".join(f"lr{lr:g}-seed{seed}" for lr, seed in pending)
        trained = group.train_group(
            [configs[m] for m in pending],
            [dirs[m] for m in pending],
            os.path.join(workdir, "runs", task.label, kind.label, "groups", name),
            task=loaded,
        )
    else:
        trained = [_train_alone(configs[m], dirs[m], devices, loaded) for m in pending]
    for m, values in zip(pending, trained, strict=True):
        if "train/steps" not in values:
            raise SuiteStopped(f"{dirs[m]} stopped before its last step; rerun to continue.")
        results[m] = values
    return results


def _train_alone(config, run_dir: str, devices, task) -> dict:
    """One run's results; a diverged run's metrics are NaN (it ranks last, as in a group)."""
    try:
        return trainer.train_and_evaluate(config, run_dir, devices=devices, task=task)
    except trainer.Diverged as e:
        logging.warning("%s", e)
        return {"train/steps": config.num_steps, "train/diverged_at_step": e.step}


def steps_to_target(run_dir: str, task: plan.TaskSpec) -> float:
    """The first step whose validation score reached the task's target (NaN: never)."""
    if task.target is None:
        return math.nan
    sign = 1.0 if task.higher_is_better else -1.0
    for record in metrics.read_metrics(run_dir):
        value = record.get(f"validation/{task.metric}")
        if value is not None and sign * value >= sign * task.target:
            return float(record["step"])
    return math.nan


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
        rates = suite.learning_rates_for(task, kind)
        first = suite.seeds[0]
        # With one rate there is nothing to choose: every seed trains in the first group.
        sweep_seeds = suite.seeds if len(rates) == 1 else (first,)
        swept = _train_runs(
            workdir, task, kind, [(lr, s) for lr in rates for s in sweep_seeds], devices, tasks
        )
        validation = {
            lr: _score(r, task, "validation") for (lr, s), r in swept.items() if s == first
        }
        best = _best_learning_rate(validation, task)
        others = [(best, seed) for seed in suite.seeds if (best, seed) not in swept]
        trained = swept | _train_runs(workdir, task, kind, others, devices, tasks)
        for (lr, seed), results in trained.items():
            sweep_rows.append(_sweep_row(task, kind, lr, seed, results))
        for seed in suite.seeds:
            results = trained[best, seed]
            reached = steps_to_target(plan.run_dir(workdir, task, kind, best, seed), task)
            final[task.label, kind.label, seed] = (best, results, reached)
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


def _result_row(suite, task, kind, seed, lr, results, reached, costs, sweeps) -> dict:
    dense_params = costs.get((task.label, ops.DEFAULT_KIND), {}).get("params")
    measured = costs[task.label, kind.label]
    return {
        "task": task.label,
        "kind": kind.label,
        "seed": seed,
        "learning_rate": lr,
        "metric": task.metric,
        "value": _score(results, task, "test"),
        "validation": _score(results, task, "validation"),
        # Seconds at this kind's measured train step time, so kinds compare on one clock.
        "steps_to_target": reached,
        "seconds_to_target": reached * measured["train_step_ms"] / 1e3,
        **measured,
        "params_vs_dense": measured["params"] / dense_params if dense_params else math.nan,
        **cost.exponents(sweeps[kind.label]),
        "theory_exponent": kind.theory_exponent,
    }
