"""The --config file of attention_jax.configs.copying (the config, its arguments, its use)."""

from attention_jax.configs.copying import get_config as get_config
