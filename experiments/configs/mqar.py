"""The --config file of attention_jax.configs.mqar (the config, its arguments, its use)."""

from attention_jax.configs.mqar import get_config as get_config
