"""The --config file of attention_jax.configs.lm_chars (the config, its arguments, its use)."""

from attention_jax.configs.lm_chars import get_config as get_config
