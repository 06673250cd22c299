"""Copying and selective copying (Mamba paper): emit the context's data tokens after a marker.

  python -m experiments.train --config=experiments/configs/copying.py:selective=true,size=small \
      --workdir=workdir/copying

Arguments: kind, size (tiny | small | paper), selective, seed. small: length 128, 8 tokens,
vocabulary 16; paper: the Mamba setting, length 4096 with 16 tokens, for an accelerator.
"""

from attention_jax.configs import common


def get_config(arg: str = ""):
    a = common.parse_arg(arg, kind="dense", size="small", selective=False, seed=0)
    dataset = "selective_copying" if a["selective"] else "copying"
    config = common.base_config(
        f"{dataset}/{'mamba' if a['size'] == 'paper' else 'small'}", "lm", kind=a["kind"]
    )
    config.seed = a["seed"]
    config.task_params.seed = a["seed"]
    config.model.update(d_model=64, num_heads=4, mlp_dim=256, num_layers=2)
    config.batch_size, config.num_steps, config.eval_every = 64, 2_000, 500
    if a["size"] == "paper":
        config.batch_size, config.num_steps, config.eval_every = 64, 40_000, 4_000
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
    return config
