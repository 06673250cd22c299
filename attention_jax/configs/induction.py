"""Induction heads (H3, Mamba): after `trigger x ... trigger`, answer x.

  python -m experiments.train --config=experiments/configs/induction.py:kind=dense \
      --workdir=workdir/induction

Arguments: kind, size (tiny | small | paper), seed. small: length 64; paper: length 256 and the
2-layer d_model 64 model of the Mamba paper's induction experiment.
"""

from attention_jax.configs import common


def get_config(arg: str = ""):
    a = common.parse_arg(arg, kind="dense", size="small", seed=0)
    task = f"induction_heads/{'mamba' if a['size'] == 'paper' else 'small'}"
    config = common.base_config(task, "lm", kind=a["kind"])
    config.seed = a["seed"]
    config.task_params.seed = a["seed"]
    config.model.update(d_model=64, num_heads=4, mlp_dim=256, num_layers=2)
    config.batch_size, config.num_steps, config.eval_every = 64, 2_000, 500
    if a["size"] == "paper":
        config.batch_size, config.num_steps, config.eval_every = 64, 25_000, 2_500
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
    return config
