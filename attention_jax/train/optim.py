"""The optimizer from config: AdamW, Adafactor or Lion; warmup then cosine or rsqrt; clipping."""

import dataclasses

import jax
import optax

from attention_jax.models.ranges import Range, check_ranges
from attention_jax.train import sharding

OPTIMIZERS = ("adamw", "adafactor", "lion")
SCHEDULES = ("cosine", "rsqrt", "constant")
# Parameters that are never decayed when `decay_all` is off: norms, biases and embeddings.
NO_DECAY_NAMES = ("bias", "scale", "embedding", "table", "cls_token")
# Adam's and Lion's moment decays: 1 would never forget (and Adam's bias correction divides by
# 1 - b^t = 0); adafactor ignores b1, b2 and eps, which are checked all the same.
RANGES = {
    "learning_rate": Range(0, open_low=True),
    "warmup_steps": Range(0, integer=True),
    "end_learning_rate_fraction": Range(0, 1, closed_high=True),
    "weight_decay": Range(0),
    "b1": Range(0, 1),
    "b2": Range(0, 1),
    "eps": Range(0, open_low=True),
    "clip_norm": Range(0, open_low=True, optional=True),
    "grad_accum_steps": Range(1, integer=True),
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    end_learning_rate_fraction: float = 0.0  # cosine decays to this fraction of the peak
    weight_decay: float = 0.0
    decay_all: bool = False  # also decay norms, biases and embeddings
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0  # global gradient-norm clipping; None for none
    grad_accum_steps: int = 1  # microbatches per step, accumulated inside the step

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}; got {self.name!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"optimizer.schedule must be one of {SCHEDULES}; got {self.schedule!r}."
            )
        check_ranges("optimizer.", self, RANGES)


def learning_rate_schedule(
    config: OptimizerConfig, num_steps: int, peak: jax.Array | None = None
) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to the end, rsqrt decay, or constant.

    `peak` (default config.learning_rate) may be a traced value: runs that differ only in
    their rate then train as one vmapped program. Every schedule is linear in its peak, so it
    is the unit-peak schedule scaled.
    """
    if peak is not None:
        unit = learning_rate_schedule(dataclasses.replace(config, learning_rate=1.0), num_steps)
        return lambda count: peak * unit(count)
    peak, warmup = config.learning_rate, config.warmup_steps
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup, max(num_steps, warmup + 1), peak * config.end_learning_rate_fraction
        )
    ramp = optax.linear_schedule(0.0, peak, max(warmup, 1))
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    else:

        def after(steps_after_warmup):
            # peak * sqrt(warmup / step), continuous at the end of warmup (the Transformer's rule).
            step = steps_after_warmup + max(warmup, 1)
            return peak * jax.lax.rsqrt(step / max(warmup, 1))

    return optax.join_schedules([ramp, after], [warmup])


def decay_mask(params):
    """True for the parameters weight decay applies to: kernels, not norms/biases/embeddings."""

    def decays(path, _):
        return not any(name in NO_DECAY_NAMES for name in sharding.path_names(path))

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    config: OptimizerConfig, num_steps: int, peak: jax.Array | None = None
) -> optax.GradientTransformation:
    """The gradient transformation: clip, then the optimizer with its schedule and decay mask.

    `peak` overrides config.learning_rate and may be traced (see learning_rate_schedule).
    """
    schedule = learning_rate_schedule(config, num_steps, peak)
    mask = None if config.decay_all else decay_mask
    if config.name == "adamw":
        optimizer = optax.adamw(
            schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=mask,
        )
    elif config.name == "lion":
        optimizer = optax.lion(
            schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay, mask=mask
        )
    else:
        # Adafactor keeps its own second-moment rule (b1, b2, eps unused); clipping is global.
        optimizer = optax.adafactor(
            schedule,
            clipping_threshold=None,
            weight_decay_rate=config.weight_decay or None,
            weight_decay_mask=mask,
        )
    clip = [] if config.clip_norm is None else [optax.clip_by_global_norm(config.clip_norm)]
    return optax.chain(*clip, optimizer)
