"""The files `--config=experiments/configs/<name>.py:ARG` loads: each re-exports a
`get_config` from attention_jax.configs, so the configs exist once and ship with the package."""
