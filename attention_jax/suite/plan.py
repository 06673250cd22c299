"""What a comparison suite trains: tasks x kinds x learning rates x seeds, checked up front.

A suite config (see experiments/configs/compare.py) names tasks, each a full training config
plus the metric it is judged by, and kinds, each an attention setting applied to every task's
model. Everything else (model size, steps, optimizer, data) comes from the task, so every kind
on a task is trained the same way: a comparison is fair by construction.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from attention_jax import ops
from attention_jax.models import config as model_config_lib
from attention_jax.models.build import MODELS
from attention_jax.train import config as config_lib

# Accuracy is higher-better; loss (nats per token) is lower-better.
METRICS = ("accuracy", "loss")


@dataclasses.dataclass(frozen=True)
class KindSpec:
    """One attention setting: a registered op (or one per layer, a hybrid), its parameters,
    optional SwitchHead routing and an optional short convolution on q, k and v.

    `learning_rate_scale` multiplies every rate the kind trains at, for kinds whose
    parametrisation shrinks their updates (SwitchHead's sigmoid gates halve the signal through
    its value and output projections); the tables report the rate actually used.
    """

    label: str
    attention: str | tuple[str, ...]
    kind_params: dict[str, Any]
    moe_attention: dict[str, Any]
    learning_rate_scale: float = 1.0
    short_conv: int | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The distinct kinds its layers use, in layer order."""
        layers = (self.attention,) if isinstance(self.attention, str) else self.attention
        return tuple(dict.fromkeys(layers))

    @property
    def theory_exponent(self) -> float:
        """Routing changes the projections, not the attention: the op's exponent holds (a
        hybrid's costliest layer sets it)."""
        return max(ops.kind(name).time_exponent for name in self.kinds)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: its whole training config and the test metric that ranks kinds on it."""

    label: str
    train: ml_collections.ConfigDict
    metric: str
    # The task's own learning-rate sweep; empty: the suite's.
    learning_rates: tuple[float, ...] = ()
    # The validation score whose first reaching is reported as time to target; None: none.
    target: float | None = None

    @property
    def causal(self) -> bool:
        return self.train.model.name == "lm"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


@dataclasses.dataclass(frozen=True)
class Suite:
    """The checked suite: tasks, kinds, the learning-rate sweep, seeds and cost settings."""

    tasks: tuple[TaskSpec, ...]
    kinds: tuple[KindSpec, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    cost: dict[str, Any]

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Suite:
        """Checks names, metrics and every run's training config before anything is trained."""
        # ConfigDict keeps keys sorted; tables read better with kinds in registration order.
        kinds = tuple(
            sorted(
                (_kind_spec(label, spec) for label, spec in config.kinds.items()),
                key=lambda k: (
                    max(map(ops.names_in_order().index, k.kinds)),
                    len(k.kinds),
                    bool(k.moe_attention),
                ),
            )
        )
        data_dir = config.get("data_dir")
        tasks = tuple(
            TaskSpec(
                label,
                _with_data_dir(spec.train, data_dir),
                spec.metric,
                tuple(float(lr) for lr in spec.get("learning_rates", ())),
                None if spec.get("target") is None else float(spec.target),
            )
            for label, spec in config.tasks.items()
        )
        for task in tasks:
            if task.metric not in METRICS:
                raise ValueError(f"task {task.label}: metric must be one of {METRICS}.")
        if not kinds or not tasks:
            raise ValueError("a suite needs at least one kind and one task.")
        learning_rates = tuple(float(lr) for lr in config.learning_rates)
        seeds = tuple(int(s) for s in config.seeds)
        if not learning_rates or not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(
                f"a suite needs learning rates and distinct seeds; got {learning_rates}, {seeds}."
            )
        suite = cls(tasks, kinds, learning_rates, seeds, config.cost.to_dict())
        for task, kind in suite.pairs():
            # A bad option fails here, in seconds, not after hours of other runs. The model is
            # checked at its config's defaults for what the task fills in (vocabulary, length).
            rate = suite.learning_rates_for(task, kind)[0]
            train = config_lib.from_config_dict(run_config(task, kind, rate, seeds[0]))
            model_config_lib.from_config_dict(MODELS[train.model["name"]][0], train.model)
        return suite

    def learning_rates_for(self, task: TaskSpec, kind: KindSpec) -> tuple[float, ...]:
        """The rates `kind` sweeps on `task`: the task's (else the suite's), times its scale."""
        return tuple(
            lr * kind.learning_rate_scale for lr in task.learning_rates or self.learning_rates
        )

    def pairs(self):
        """(task, kind) for every pair that can run; see `skip_reason` for the others."""
        for task in self.tasks:
            for kind in self.kinds:
                if skip_reason(task, kind) is None:
                    yield task, kind


def _kind_spec(label: str, spec: Mapping) -> KindSpec:
    spec = dict(spec)
    keys = ("attention", "kind_params", "moe_attention", "learning_rate_scale", "short_conv")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ValueError(f"kind {label}: unknown keys {unknown}; give {', '.join(keys)}.")
    attention = spec.get("attention", label)
    attention = attention if isinstance(attention, str) else tuple(attention)
    for name in (attention,) if isinstance(attention, str) else attention:
        ops.get(name)  # ValueError naming the registered kinds
    scale = float(spec.get("learning_rate_scale", 1.0))
    if not scale > 0:
        raise ValueError(f"kind {label}: learning_rate_scale must be > 0; got {scale}.")
    return KindSpec(
        label,
        attention,
        _plain(spec.get("kind_params", {})),
        _plain(spec.get("moe_attention", {})),
        scale,
        spec.get("short_conv"),
    )


def _with_data_dir(train, data_dir: str | None) -> ml_collections.ConfigDict:
    """The task's config with the suite's data_dir, when the suite sets one."""
    train = ml_collections.ConfigDict(train.to_dict())
    if data_dir:
        train.data_dir = data_dir
    return train


def _plain(value) -> dict:
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


def skip_reason(task: TaskSpec, kind: KindSpec) -> str | None:
    """Why `kind` cannot run on `task` (a causal task and a kind with no causal form, or the
    reverse), or None."""
    for name in kind.kinds:
        if task.causal and not ops.kind(name).causal:
            return f"{name} is not causal"
        if not task.causal and not ops.kind(name).bidirectional:
            return f"{name} is causal only"
    return None


def run_config(
    task: TaskSpec, kind: KindSpec, learning_rate: float, seed: int
) -> ml_collections.ConfigDict:
    """The task's training config with the kind's attention, this learning rate and seed.

    The data seed (`task_params.seed`) is the task's, so every run sees the same examples.
    """
    config = ml_collections.ConfigDict(task.train.to_dict())
    model = config.model.to_dict()
    model.update(
        attention=kind.attention, kind_params=kind.kind_params, moe_attention=kind.moe_attention
    )
    if kind.short_conv is not None:
        model["short_conv"] = kind.short_conv
    # Not type-safe: `attention` is a name for most kinds and a tuple of names for a hybrid.
    config.model = ml_collections.ConfigDict(model, type_safe=False)
    config.optimizer.learning_rate = learning_rate
    config.seed = seed
    return config


def run_dir(workdir: str, task: TaskSpec, kind: KindSpec, learning_rate: float, seed: int) -> str:
    """runs/<task>/<kind>/lr<lr>/seed<seed> under the suite's workdir."""
    return os.path.join(
        workdir, "runs", task.label, kind.label, f"lr{learning_rate:g}", f"seed{seed}"
    )
