"""What every training config shares: the argument parser and the base config.

`get_config(arg)` in each task file receives what follows the colon in
`--config=experiments/configs/mqar.py:kind=performer,size=small`. `parse_arg` turns it into
typed values from the task's defaults and refuses unknown keys, so a typo fails at once.
"""

import ml_collections

from attention_jax import models

SIZES = ("tiny", "small", "paper")


def parse_arg(arg: str, **defaults):
    """'kind=performer,size=small' -> dict of typed values; every key must be in `defaults`.

    Values take the type of their default (int, float, bool, str).
    """
    values = dict(defaults)
    for item in filter(None, (part.strip() for part in arg.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"config argument {item!r} is not key=value (in {arg!r}).")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}.")
        kind = type(defaults[key])
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config argument {key} must be true or false, got {raw!r}.")
            values[key] = raw.lower() in ("true", "1")
        else:
            try:
                values[key] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"config argument {key} must be {kind.__name__}, got {raw!r}."
                ) from None
    if "size" in values and values["size"] not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {values['size']!r}.")
    return values


def base_config(task: str, model: str, *, kind: str) -> ml_collections.ConfigDict:
    """Defaults for a run of `model` ('lm' or 'classifier') on `task` with attention `kind`."""
    config = ml_collections.ConfigDict()
    config.task = task
    config.task_params = ml_collections.ConfigDict()
    config.data_dir = ml_collections.config_dict.placeholder(str)
    config.seq_len = ml_collections.config_dict.placeholder(int)
    config.model = models.default_config(model)
    config.model.attention = kind
    config.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",
            learning_rate=1e-3,
            schedule="cosine",
            warmup_steps=100,
            end_learning_rate_fraction=0.0,
            weight_decay=0.1,
            decay_all=False,
            b1=0.9,
            b2=0.98,
            eps=1e-8,
            # Typed object, so the command line can also turn clipping off:
            # --config.optimizer.clip_norm=None.
            clip_norm=ml_collections.FieldReference(1.0, field_type=object),
            grad_accum_steps=1,
        )
    )
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, expert=1))
    config.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3))
    config.batch_size = 64
    config.num_steps = 1000
    config.eval_every = 500
    config.eval_batches = ml_collections.config_dict.placeholder(int)
    # The final validation and test evaluation; None: the whole splits.
    config.final_eval_batches = ml_collections.config_dict.placeholder(int)
    config.log_every = 50
    config.seed = 0
    config.distributed = False
    return config


def shrink_to_tiny(config: ml_collections.ConfigDict) -> None:
    """Seconds on a CPU: a one-layer model, a few hundred examples, a few dozen steps."""
    config.task_params.update(num_train=512, num_validation=64, num_test=64)
    config.model.update(d_model=32, num_heads=2, mlp_dim=64, num_layers=1)
    config.batch_size = 16
    config.num_steps = 30
    config.optimizer.update(learning_rate=1e-2, warmup_steps=5)
    config.eval_every = 15
    config.eval_batches = 2
    config.log_every = 5
    config.checkpoint.every_steps = 10
