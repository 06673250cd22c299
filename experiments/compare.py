"""Compare attention kinds on quality against cost: python -m experiments.compare
--config=experiments/configs/compare.py:<suite> --workdir=DIR. Rerunning continues a suite.

Short on purpose: the work is `attention_jax.suite.run_suite`, importable in Colab.
"""

import os
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from attention_jax import suite
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/compare.py:quick")
_WORKDIR = flags.DEFINE_string("workdir", None, "Runs, costs, tables and plots go here.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    cli.apply_log_level()
    # Runs that differ only in their seed compile the same steps: compile each once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(_WORKDIR.value, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:
        suite.run_suite(_CONFIG.value, _WORKDIR.value)
    except suite.SuiteStopped as stopped:
        print(stopped)
        sys.exit(143)  # as experiments.train: preempted, rerun to continue
    with open(f"{_WORKDIR.value}/results.md") as f:
        print(f.read())
    print(f"Wrote results.csv, sweep.csv, results.md and two plots to {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
