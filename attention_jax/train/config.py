"""The training configuration: a ConfigDict becomes these checked dataclasses at one boundary.

Everything a run needs is checked here, before any data is generated or any device is touched,
so a bad config fails in seconds with a message that says what to change.
"""

import dataclasses
import json
from typing import Any

import ml_collections

from attention_jax import data
from attention_jax.models import config as model_config_lib
from attention_jax.models.build import MODELS
from attention_jax.models.ranges import POSITIVE_INT, POSITIVE_INT_OR_NONE, Range, check_ranges
from attention_jax.train.optim import OptimizerConfig
from attention_jax.train.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000  # also at the end and on SIGTERM
    keep: int = 3

    def __post_init__(self):
        check_ranges(
            "config.checkpoint.", self, dict.fromkeys(("every_steps", "keep"), POSITIVE_INT)
        )


RANGES = {
    "seq_len": POSITIVE_INT_OR_NONE,
    "batch_size": POSITIVE_INT,
    "num_steps": POSITIVE_INT,
    "eval_every": POSITIVE_INT,
    "eval_batches": POSITIVE_INT_OR_NONE,
    "final_eval_batches": POSITIVE_INT_OR_NONE,
    "log_every": POSITIVE_INT,
    # Seeds NumPy and grain take (no negatives) and train_group stacks as int32.
    "seed": Range(0, 2**31, integer=True),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: task, model, optimiser, mesh, schedule of steps, checkpoints."""

    task: str
    model: dict  # model config values; vocab_size, max_len, num_classes come from the task
    task_params: dict = dataclasses.field(default_factory=dict)
    data_dir: str | None = None
    seq_len: int | None = None
    optimizer: OptimizerConfig = OptimizerConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    batch_size: int = 32  # global, over all hosts and devices
    num_steps: int = 1000
    eval_every: int = 500
    eval_batches: int | None = None  # None: the whole validation split
    # Batches of the final validation and test evaluation; None: the whole splits.
    final_eval_batches: int | None = None
    log_every: int = 50
    seed: int = 0
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)

    def __post_init__(self):
        check_ranges("config.", self, RANGES)
        if self.batch_size % self.optimizer.grad_accum_steps:
            raise ValueError(
                f"config: batch_size {self.batch_size} is not divisible by "
                f"optimizer.grad_accum_steps {self.optimizer.grad_accum_steps}."
            )


def _dataclass_from(cls, values, where: str):
    """cls(**values), with unknown keys named in the error."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config.{where}: unknown keys {unknown}; known: {sorted(known)}.")
    return cls(**values)


def from_config_dict(config: ml_collections.ConfigDict) -> TrainConfig:
    """The typed TrainConfig of a ConfigDict (from experiments/configs/*.py)."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    model = dict(values.pop("model", None) or {})
    if model.get("name") not in MODELS:
        raise ValueError(
            f"config.model.name must be one of {sorted(MODELS)}; got {model.get('name')!r}."
        )
    nested = dict(
        optimizer=_dataclass_from(OptimizerConfig, values.pop("optimizer", None), "optimizer"),
        mesh=_dataclass_from(MeshConfig, values.pop("mesh", None), "mesh"),
        checkpoint=_dataclass_from(CheckpointConfig, values.pop("checkpoint", None), "checkpoint"),
        task_params=dict(values.pop("task_params", None) or {}),
    )
    return _dataclass_from(TrainConfig, values | nested | {"model": model}, "")


def load_task(config: TrainConfig):
    """The config's task (`data.get_task` with its task, data_dir, seq_len and task_params)."""
    return data.get_task(
        config.task, data_dir=config.data_dir, seq_len=config.seq_len, **config.task_params
    )


def model_config_for(config: TrainConfig, task) -> Any:
    """The checked model config dataclass, with vocabulary, length and classes from the task."""
    model = dict(config.model)
    config_cls = MODELS[model["name"]][0]
    model["vocab_size"] = task.vocab_size
    model["max_len"] = task.seq_len
    if task.kind == "classification":
        if model["name"] != "classifier":
            raise ValueError(
                f"task {task.name} is a classification task; use model.name "
                f"'classifier', not {model['name']!r}."
            )
        model["num_classes"] = task.num_classes
    elif model["name"] != "lm":
        raise ValueError(
            f"task {task.name} is a next-token task; use model.name 'lm', not {model['name']!r}."
        )
    return model_config_lib.from_config_dict(config_cls, model)


def to_json(config: TrainConfig) -> dict:
    """The config as plain JSON values (tuples become lists), as config.json stores it."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
