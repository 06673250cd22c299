"""The --config file of attention_jax.configs.cost (the config, its arguments, its use)."""

from attention_jax.configs.cost import get_config as get_config
