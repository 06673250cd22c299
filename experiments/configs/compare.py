"""The --config file of attention_jax.configs.compare (the config, its arguments, its use)."""

from attention_jax.configs.compare import get_config as get_config
