"""Character-level language modelling on Python's standard-library source (no download).

  python -m experiments.train --config=experiments/configs/lm_chars.py:kind=local,size=small \
      --workdir=workdir/chars

Arguments: kind, size (tiny | small | paper), seq_len, seed. small: rows of 256 bytes, a
4-layer d_model 128 model; paper: rows of 1024 and a 6-layer d_model 512 model.
"""

from attention_jax.configs import common


def get_config(arg: str = ""):
    a = common.parse_arg(arg, kind="dense", size="small", seq_len=0, seed=0)
    config = common.base_config("chars", "lm", kind=a["kind"])
    config.seed = a["seed"]
    if a["size"] == "paper":
        config.seq_len = a["seq_len"] or 1024
        config.model.update(d_model=512, num_heads=8, mlp_dim=2048, num_layers=6)
        config.batch_size, config.num_steps, config.eval_every = 64, 20_000, 2_000
        config.optimizer.update(learning_rate=6e-4, warmup_steps=1_000)
    else:
        config.seq_len = a["seq_len"] or 256
        config.model.update(d_model=128, num_heads=4, mlp_dim=512, num_layers=4)
        config.batch_size, config.num_steps, config.eval_every = 32, 2_000, 500
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
        config.task_params = {}  # the corpus has no size parameters
        config.seq_len = a["seq_len"] or 64
    return config
