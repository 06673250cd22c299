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
    # The attention layer's decoding state, by kind, at the end of caches of these lengths.
    config.layer_kinds = (
        "dense",
        "local",
        "bigbird",
        "moba",
        "linear",
        "performer",
        "gla",
        "deltanet",
    )
    config.cache_lens = (64, 256) if arg == "small" else (1024, 8192, 65536)
    config.d_model = 512
    config.layer_kind_params = {
        "local": {"local_window_size": (128, 0)},
        # MoBA at the setting; the short caches of 'small' need shorter blocks.
        "moba": {"block_size": 16 if arg == "small" else 512, "top_k": 3},
    }
    return config
