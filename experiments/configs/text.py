"""The --config file of attention_jax.configs.text (the config, its arguments, its use)."""

from attention_jax.configs.text import get_config as get_config
