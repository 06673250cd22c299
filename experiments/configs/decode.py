"""The --config file of attention_jax.configs.decode (the config, its arguments, its use)."""

from attention_jax.configs.decode import get_config as get_config
