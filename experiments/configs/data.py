"""The --config file of attention_jax.configs.data (the config, its arguments, its use)."""

from attention_jax.configs.data import get_config as get_config
