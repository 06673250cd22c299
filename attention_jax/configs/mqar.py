"""MQAR (Zoology), next-token recall at the query positions.

  python -m experiments.train --config=experiments/configs/mqar.py:kind=dense,size=small \
      --workdir=workdir/mqar

Arguments: kind (any registered attention kind), size (tiny | small | paper), seq_len and
num_kv_pairs (a Zoology Figure 2 size: 64/4, 128/8, 256/16, 512/64), d_model, seed,
random_fillers (true: uniform random tokens between the queries, the default; false: token 0
there, as the configs behind Zoology's Figure 2, `random_non_queries=False`).
small is the CPU version (vocabulary 256, 20k examples); paper uses Zoology's vocabulary 8192
and 100k examples, for an accelerator.
"""

from attention_jax.configs import common


def get_config(arg: str = ""):
    a = common.parse_arg(
        arg,
        kind="dense",
        size="small",
        seq_len=128,
        num_kv_pairs=8,
        d_model=64,
        seed=0,
        random_fillers=True,
    )
    prefix = "" if a["size"] == "paper" else "small_"
    task = f"mqar/{prefix}s{a['seq_len']}_kv{a['num_kv_pairs']}"
    config = common.base_config(task, "lm", kind=a["kind"])
    config.seed = a["seed"]
    config.task_params.seed = a["seed"]
    # Set only when off the default, so default task_params and dataset names stay as they were.
    if not a["random_fillers"]:
        config.task_params.random_fillers = False
    # Zoology's model: two layers, no positional cost to speak of at these lengths.
    config.model.update(d_model=a["d_model"], num_heads=2, mlp_dim=4 * a["d_model"], num_layers=2)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100, weight_decay=0.1)
    if a["size"] == "paper":
        config.batch_size, config.num_steps, config.eval_every = 256, 25_000, 2_500
    else:
        config.batch_size, config.num_steps, config.eval_every = 64, 2_000, 500
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
        config.task = "mqar/small_s64_kv4"
    return config
