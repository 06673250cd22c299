"""Train one config: python -m experiments.train --config=experiments/configs/<task>.py:<args>
--workdir=DIR. Short on purpose: the loop is `attention_jax.train.train_and_evaluate`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from attention_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and results go here.")
flags.mark_flags_as_required(["config", "workdir"])


# The exit status of a run stopped by SIGTERM (128 + 15), so schedulers requeue it.
PREEMPTED = 143


def main(argv):
    del argv
    if flags.FLAGS["verbosity"].using_default_value:
        # Warnings and errors only (orbax logs every write); --verbosity=0 shows everything.
        logging.set_verbosity(logging.WARNING)
    if not train.train_and_evaluate(_CONFIG.value, _WORKDIR.value):
        sys.exit(PREEMPTED)  # stopped before num_steps with a checkpoint; rerun to resume


if __name__ == "__main__":
    app.run(main)
