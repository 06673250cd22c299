"""LRA Image: CIFAR-10 as a sequence of 1024 grayscale pixels (needs the cifar10 TFDS download).

  python -m experiments.train --config=experiments/configs/image.py:kind=linear \
      --workdir=workdir/image

Arguments: kind, size (tiny | small | paper), seed. paper: 3 layers of d_model 64, batch 256,
35k steps (LRA Image's scale); small: the same model for 3k steps.
"""

from attention_jax.configs import common


def get_config(arg: str = ""):
    a = common.parse_arg(arg, kind="dense", size="paper", seed=0)
    config = common.base_config("cifar10", "classifier", kind=a["kind"])
    config.seed = a["seed"]
    config.model.update(pooling="mean", positions="learned")
    config.model.update(d_model=64, num_heads=4, mlp_dim=128, num_layers=3)
    config.batch_size, config.num_steps, config.eval_every = 256, 35_000, 5_000
    config.optimizer.update(learning_rate=5e-4, warmup_steps=175, weight_decay=0.0)
    if a["size"] == "small":
        config.num_steps, config.eval_every = 3_000, 500
    if a["size"] == "tiny":
        common.shrink_to_tiny(config)
        config.task_params = {}
    return config
