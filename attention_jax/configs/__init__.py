"""Experiment configs: `<name>.get_config(arg)` returns the ml_collections.ConfigDict of a run.

`arg` is what follows the colon in `--config=experiments/configs/<name>.py:ARG`; those files
re-export these functions. The configs live in the package so that an installed
attention_jax (a Colab runtime, a user's project) has them without a checkout, while the
entry points in experiments/ stay out of site-packages.
"""
