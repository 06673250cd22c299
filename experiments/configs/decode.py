"""Decoding cost per token: `python -m experiments.decode --config=experiments/configs/decode.py`.

The argument 'small' keeps positions short (for tests); the default goes to 100,000 tokens.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "small"):
        raise ValueError(f"decode config takes '' or 'small'; got {arg!r}.")
    config = ml_collections.ConfigDict()
    config.positions = (10, 100) if arg == "small" else (100, 1000, 10000, 100000)
    config.batch = 1
    config.num_heads = 8
    config.num_kv_heads = 8
    config.head_dim = 64
    config.dtype = "float32"
    config.feature_map = "elu"
    config.repeats = 3 if arg == "small" else 50
    return config
