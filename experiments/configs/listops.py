"""The --config file of attention_jax.configs.listops (the config, its arguments, its use)."""

from attention_jax.configs.listops import get_config as get_config
