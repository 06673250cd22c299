"""Input-data cost: `python -m experiments.data --config=experiments/configs/data.py`.

Times generating each CPU-small task (20k train examples) and measures how long a training step
waits for its batch. The argument 'small' shrinks everything for tests.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "small"):
        raise ValueError(f"data config takes '' or 'small'; got {arg!r}.")
    small = arg == "small"
    config = ml_collections.ConfigDict()
    config.generate = ("mqar/small_s128_kv8", "mqar/small_s512_kv64", "listops/small")
    # Overrides for every generated task (e.g. fewer examples for a quick check).
    config.generate_overrides = (
        {"num_train": 200, "num_validation": 20, "num_test": 20} if small else {}
    )
    config.wait_tasks = ("mqar/small_s128_kv8", "listops/small", "chars")
    # The floor accuracy claims must beat: always answering the most common label or token.
    config.balance_tasks = (
        "mqar/small_s128_kv8",
        "listops/small",
        "copying/small",
        "selective_copying/small",
        "induction_heads/small",
    )
    config.batch_size = 8 if small else 64
    config.steps = 5 if small else 50
    config.data_dir = ""  # empty: TFDS's default (~/tensorflow_datasets)
    return config
