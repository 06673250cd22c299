"""The --config file of attention_jax.configs.image (the config, its arguments, its use)."""

from attention_jax.configs.image import get_config as get_config
