"""ListOps (LRA): classify the value of a nested MIN/MAX/MED/SM expression.

  python -m experiments.train --config=experiments/configs/listops.py:kind=dense,size=small \
      --workdir=workdir/listops

Arguments: kind, size (tiny | small | paper), seed, tokenization (explicit: every `]` is a
token, the default; lra: the `]` dropped, as LRA's tokenizer did, so its models saw only
operators and digits). small: lengths 32-256, 20k examples, a 4-layer model for a CPU. paper:
LRA's lengths 500-2000 and its 4-layer, d_model 512 model.
"""

from attention_jax.configs import common
from attention_jax.data import listops as listops_data


def get_config(arg: str = ""):
    a = common.parse_arg(arg, kind="dense", size="small", seed=0, tokenization="explicit")
    if a["tokenization"] not in listops_data.TOKENIZATIONS:
        raise ValueError(
            f"tokenization must be one of {listops_data.TOKENIZATIONS}, got {a['tokenization']!r}."
        )
    task = "listops/lra" if a["size"] == "paper" else "listops/small"
    config = common.base_config(task, "classifier", kind=a["kind"])
    config.seed = a["seed"]
    config.task_params.seed = a["seed"]
    # Set only when off the default, so default task_params and dataset names stay as they were.
    if a["tokenization"] != "explicit":
        config.task_params.tokenization = a["tokenization"]
    config.model.update(pooling="mean", positions="learned")
    if a["size"] == "paper":
        config.model.update(d_model=512, num_heads=8, mlp_dim=2048, num_layers=4)
        config.batch_size, config.num_steps, config.eval_every = 32, 5_000, 1_000
        config.optimizer.update(learning_rate=5e-2 / 512**0.5, warmup_steps=1_000)
    else:
        config.model.update(d_model=64, num_heads=4, mlp_dim=128, num_layers=4)
        config.batch_size, config.num_steps, config.eval_every = 64, 3_000, 500
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
    return config
