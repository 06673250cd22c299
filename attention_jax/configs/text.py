"""LRA Text: byte-level IMDb review classification (needs the imdb_reviews TFDS download).

  python -m experiments.train --config=experiments/configs/text.py:kind=performer,size=paper \
      --workdir=workdir/text

Arguments: kind, size (tiny | small | paper), seq_len, seed. paper: LRA's 4K bytes and its
4-layer d_model 256 model; small: 1K bytes and a smaller model.
"""

from attention_jax.configs import common


def get_config(arg: str = ""):
    a = common.parse_arg(arg, kind="dense", size="paper", seq_len=0, seed=0)
    config = common.base_config("imdb_reviews", "classifier", kind=a["kind"])
    config.seed = a["seed"]
    config.model.update(pooling="mean", positions="learned")
    if a["size"] == "paper":
        config.seq_len = a["seq_len"] or 4096
        config.model.update(d_model=256, num_heads=4, mlp_dim=1024, num_layers=4)
        config.batch_size, config.num_steps, config.eval_every = 32, 20_000, 1_000
        config.optimizer.update(learning_rate=5e-2 / 256**0.5, warmup_steps=8_000)
    else:
        config.seq_len = a["seq_len"] or 1024
        config.model.update(d_model=64, num_heads=4, mlp_dim=256, num_layers=2)
        config.batch_size, config.num_steps, config.eval_every = 32, 3_000, 500
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
        config.task_params = {}
        config.seq_len = a["seq_len"] or 128
    return config
