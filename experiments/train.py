"""Train one config: python -m experiments.train --config=experiments/configs/<task>.py:<args>
--workdir=DIR. Short on purpose: the loop is `attention_jax.train.train_and_evaluate`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from attention_jax import train
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and results go here.")
_ALLOW_CHANGES = flags.DEFINE_list(
    "allow_changes",
    [],
    "Settings that may differ from the workdir's stored config when resuming, e.g. "
    "num_steps to extend a finished run (see attention_jax.train.resume.CHANGEABLE).",
)
flags.mark_flags_as_required(["config", "workdir"])


# The exit status of a run stopped by SIGTERM (128 + 15), so schedulers requeue it.
PREEMPTED = 143


def main(argv):
    del argv
    cli.apply_log_level()
    try:
        finished = train.train_and_evaluate(
            _CONFIG.value, _WORKDIR.value, allow_changes=_ALLOW_CHANGES.value
        )
    except (ValueError, train.Diverged) as e:  # a refused config, a divergence: one line
        logging.error("%s: %s", type(e).__name__, e)
        sys.exit(1)
    if not finished:
        sys.exit(PREEMPTED)  # stopped before num_steps with a checkpoint; rerun to resume


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
