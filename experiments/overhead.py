"""Framework overhead of the trainer against a bare jitted loop (same model, batch, devices).

python -m experiments.overhead --config=experiments/configs/mqar.py:size=small --window=20
"""

from absl import app, flags
from ml_collections import config_flags

from attention_jax.bench import train_overhead

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/mqar.py:size=small")
_WINDOW = flags.DEFINE_integer("window", 20, "Steps per timed window.")
flags.FLAGS.set_default("verbosity", -1)


def main(argv):
    del argv
    config = _CONFIG.value
    bare = train_overhead.bare_step_seconds(config, window=_WINDOW.value)
    full = train_overhead.trainer_step_seconds(config, window=_WINDOW.value)
    print(
        f"| {config.task} | batch {config.batch_size} | bare jit step {1e3 * bare:.1f} ms | "
        f"train_and_evaluate {1e3 * full:.1f} ms | overhead {100 * (full / bare - 1):+.1f}% |"
    )


if __name__ == "__main__":
    app.run(main)
