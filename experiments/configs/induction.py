"""The --config file of attention_jax.configs.induction (the config, its arguments, its use)."""

from attention_jax.configs.induction import get_config as get_config
