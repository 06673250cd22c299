"""Does training seeds as one vmapped group pay here? python -m experiments.group_speed

Trains the same runs of the cpu suite's MQAR (64, 4) task (one kind, --seeds seeds, --steps
steps, one device) twice in this process: one at a time with `train_and_evaluate`, then as one
`train_group`; prints the wall time of each, compilation and evaluation included.
"""

import tempfile
import time

import jax
from absl import app, flags

from attention_jax import train
from attention_jax.configs import compare
from attention_jax.suite import plan
from attention_jax.train import config as config_lib
from attention_jax.train import group

_KIND = flags.DEFINE_string("kind", "dense", "A kind of the cpu suite.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Runs (seeds 0..seeds-1) trained both ways.")
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps of each run.")


def main(argv):
    del argv
    suite = plan.Suite.from_config(compare.get_config("cpu"))
    task = next(t for t in suite.tasks if t.label == "mqar_64_4")
    kind = next(k for k in suite.kinds if k.label == _KIND.value)
    configs = []
    for seed in range(_SEEDS.value):
        config = plan.run_config(task, kind, task.learning_rates[0], seed)
        config.num_steps = _STEPS.value
        config.eval_every = config.checkpoint.every_steps = _STEPS.value // 2
        configs.append(config)
    loaded = config_lib.load_task(config_lib.from_config_dict(configs[0]))
    root = tempfile.mkdtemp(prefix="group_speed_")
    start = time.perf_counter()
    for i, config in enumerate(configs):
        train.train_and_evaluate(config, f"{root}/alone{i}", devices=jax.devices()[:1], task=loaded)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    dirs = [f"{root}/member{i}" for i in range(len(configs))]
    group.train_group(configs, dirs, f"{root}/group", task=loaded)
    grouped = time.perf_counter() - start
    print(
        f"{_KIND.value}, {_SEEDS.value} runs x {_STEPS.value} steps on {jax.devices()[0]}: "
        f"one at a time {alone:.1f} s, one vmapped group {grouped:.1f} s "
        f"({alone / grouped:.2f}x)"
    )


if __name__ == "__main__":
    app.run(main)
