"""Suites comparing attention kinds on quality against cost.

  python -m experiments.compare --config=experiments/configs/compare.py:cpu --workdir=DIR

The argument after the colon names the suite:
  tiny     dense and local (2 keys back) on a tiny recall task, 1 seed, a 2-rate sweep: for
           tests (dense must learn it and local must not).
  quick    every kind on MQAR (64, 4), seed 0: the recall separation in about 10 minutes on 2
           cores.
  cpu      every kind on MQAR (64, 4) and a byte-level LM at 256 bytes, seeds 0 and 1: the
           README's table, about an hour on 2 cores.
  short_conv
           the cpu suite's recall task, seeds 0 and 1, for the state-carrying kinds with and
           without their short convolution, and linear attention with and without one: what
           the convolution buys, next to what the state update does. Run it in the cpu suite's
           workdir and it trains only the runs cpu did not.
  lra      ListOps 2K (LRA's tokenization), Text 4K (byte IMDb) and Image 1K (grayscale
           CIFAR-10) at LRA's sizes, 3 seeds: an accelerator's job (Text and Image download their
           TFDS datasets first).
  zoology  MQAR at Zoology's sizes (vocabulary 8192, zero fillers) over sequence lengths
           64..512 and d_model 64..512, as in its Figure 2: an accelerator's job.
Other settings are flags: --config.seeds='(0,1,2)', --config.data_dir=/data/tfds.

Every kind on a task gets the task's model size, steps, optimizer and data; only the attention
differs (and the rate of a kind whose spec sets `learning_rate_scale`: SwitchHead's, see
KINDS). The CPU tasks are sized so that their answers are decisive on two cores: exact
attention learns MQAR (64, 4) within the budget for every seed tried, so a kind that does not
is short of recall, not of steps.
"""

import ml_collections

from attention_jax.configs import image as image_config
from attention_jax.configs import listops, lm_chars, mqar, text

SUITES = ("tiny", "quick", "cpu", "short_conv", "lra", "zoology")

STATE_KINDS = ("retnet", "gla", "mamba2", "deltanet", "gated_deltanet")
# Every kind at a setting for sequences of 64..4K; its label names it in the tables.
KINDS = {
    "dense": {},
    "flash": {"kind_params": {"block_q": 64, "block_kv": 64}},
    "local": {"kind_params": {"local_window_size": (32, 32)}},
    "bigbird": {
        "kind_params": {
            "block_size": 16,
            "num_window_blocks": 3,
            "num_global_blocks": 1,
            "num_random_blocks": 2,
        }
    },
    "linear": {"kind_params": {"feature_map": "elu"}},
    "performer": {"kind_params": {"num_features": 64}},
    "based": {},
    "linformer": {"kind_params": {"projected_len": 32}},
    # MoBA: each query attends to its own block and its 2 best earlier ones (by q . mean key).
    "moba": {"kind_params": {"block_size": 16, "top_k": 3}},
    # SwitchHead: dense attention with 4 value and output experts per head, 2 used per token.
    # Its sigmoid gates (about 0.5 at init) scale the value and output paths down, so it
    # trains at twice the task's rate: at the same rate it had not learned MQAR (64, 4) by
    # step 800 (0.25 for seed 0), at twice the rate seeds 0-2 reach 0.97-0.99.
    "switchhead": {
        "attention": "dense",
        "moe_attention": {"num_experts": 4, "top_k": 2},
        "learning_rate_scale": 2.0,
    },
    # The state-carrying kinds (causal only) with the width-4 causal convolution on q, k and v
    # that Mamba-2, DeltaNet and Gated DeltaNet use; RetNet and GLA get it too, so the five
    # differ only in how their state forgets and writes.
    **{name: {"short_conv": 4} for name in STATE_KINDS},
    # A hybrid as recent models build them: Gated DeltaNet and dense layers alternating.
    "gated_deltanet_dense": {"attention": ("gated_deltanet", "dense"), "short_conv": 4},
}
# At LRA's lengths the blocks and windows grow with n.
LONG_KIND_PARAMS = {
    "flash": {"block_q": 512, "block_kv": 512},
    "local": {"local_window_size": (128, 128)},
    "bigbird": {
        "block_size": 64,
        "num_window_blocks": 3,
        "num_global_blocks": 2,
        "num_random_blocks": 3,
    },
    "performer": {"num_features": 256},
    "linformer": {"projected_len": 256},
    "moba": {"block_size": 128, "top_k": 4},
}


# The CPU suites' attention settings at lengths 16..256: local sees 16 keys back (shorter than
# most key-query gaps of MQAR (64, 4), enough for most of a byte's context); BigBird's global
# block covers MQAR's key-value pairs, so it keeps global reach.
CPU_KIND_PARAMS = {
    "local": {"local_window_size": (16, 16)},
    # 8 blocks of MQAR (64, 4), 32 of a 256-byte row: 3 blocks are 37% and 9% of the keys.
    "moba": {"block_size": 8, "top_k": 3},
    "bigbird": {
        "block_size": 8,
        "num_window_blocks": 3,
        "num_global_blocks": 1,
        "num_random_blocks": 2,
    },
}


def _evaluated_run(config, *, batch_size: int, num_steps: int, evals: int = 20):
    """A CPU run validated `evals` times (for time to target) on the whole validation split,
    the examples of its final validation score (a few leading batches of a byte corpus are a
    module or two, not a sample)."""
    config.batch_size = batch_size
    config.num_steps = num_steps
    config.eval_every = max(1, num_steps // evals)
    config.eval_batches = None
    config.final_eval_batches = None
    config.log_every = max(1, num_steps // 10)
    config.checkpoint.every_steps = num_steps // 2
    config.checkpoint.keep = 1
    return config


def _task(train, metric: str = "accuracy", **options) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"train": train, "metric": metric, **options})


def _without_validation(train) -> ml_collections.ConfigDict:
    """A task with no validation split trains at its config's rate: a sweep would have to pick
    on test."""
    return _task(train, learning_rates=(train.optimizer.learning_rate,))


def _mqar_64_4() -> ml_collections.ConfigDict:
    """MQAR (64, 4) at batch 64: 2 layers, d_model 64, 4 heads of 16 (Based's feature size).

    Dense attention learns it in a sudden transition (by step 400-560 for seeds 0-3 at a
    constant 3e-3): a cosine schedule that has decayed by then stalls it, so the rate stays
    constant after warmup, and the budget leaves room for late seeds.
    """
    train = mqar.get_config("seq_len=64,num_kv_pairs=4,d_model=64")
    train.model.update(num_heads=4)
    train.optimizer.update(learning_rate=3e-3, schedule="constant", warmup_steps=100)
    return _task(
        _evaluated_run(train, batch_size=64, num_steps=MQAR_STEPS),
        learning_rates=(3e-3,),
        target=0.9,
    )


def _chars_256() -> ml_collections.ConfigDict:
    """Byte-level LM on Python source, 256-byte rows: most of the signal is local."""
    train = lm_chars.get_config("seq_len=256")
    train.model.update(d_model=64, num_heads=4, mlp_dim=256, num_layers=2)
    train.optimizer.update(learning_rate=3e-3, warmup_steps=30)
    return _task(
        _evaluated_run(train, batch_size=16, num_steps=CHARS_STEPS, evals=10),
        metric="loss",
        learning_rates=(3e-3,),
        target=CHARS_TARGET,
    )


CPU_SEEDS = (0, 1)
MQAR_STEPS = 800
CHARS_STEPS = 300
CHARS_TARGET = 2.5


def _tiny_tasks() -> dict:
    """MQAR (16, 4) over 32 tokens, trained for seconds: dense attention learns it (0.99 after
    ~150-200 steps), local attention two keys back cannot (chance is 1/16). The test suite
    checks both, so a change that stops exact attention from learning recall fails there."""
    train = mqar.get_config("size=tiny")
    train.seq_len = 16
    train.task_params.update(vocab_size=32, num_train=8192, num_validation=256, num_test=256)
    train.model.update(d_model=32, num_heads=2, mlp_dim=64, num_layers=2)
    train.optimizer.update(learning_rate=1e-2, schedule="constant", warmup_steps=50)
    train = _evaluated_run(train, batch_size=32, num_steps=200, evals=8)
    return {"mqar_tiny": _task(train, target=0.9)}


def _lra_tasks() -> dict:
    return {
        # LRA's tokenizer dropped every "]": the model sees operators and digits only.
        "listops_2k": _task(listops.get_config("size=paper,tokenization=lra")),
        "text_4k": _without_validation(text.get_config("size=paper")),
        "image_1k": _without_validation(image_config.get_config("size=paper")),
    }


# Zoology Figure 2: (sequence length, key-value pairs), each at d_model 64..512.
ZOOLOGY_SIZES = ((64, 4), (128, 8), (256, 16), (512, 64))


def _zoology_tasks() -> dict:
    tasks = {}
    for seq_len, pairs in ZOOLOGY_SIZES:
        for d_model in (64, 128, 256, 512):
            # Zoology's Figure 2 puts token 0 at every position that is no pair and no query.
            arg = (
                f"size=paper,seq_len={seq_len},num_kv_pairs={pairs},d_model={d_model},"
                "random_fillers=false"
            )
            tasks[f"mqar_{seq_len}_{pairs}_d{d_model}"] = _task(mqar.get_config(arg))
    return tasks


def _kinds(names, params: dict | None = None) -> dict:
    """The named KINDS, with `params` (CPU_KIND_PARAMS, LONG_KIND_PARAMS) replacing theirs."""
    kinds = {}
    for name in names:
        spec = dict(KINDS[name])
        if params and name in params:
            spec["kind_params"] = params[name]
        kinds[name] = spec
    return kinds


def _short_conv_ablation() -> dict:
    """The state-carrying kinds with their convolution (as in cpu) and without, and linear
    attention without (as in cpu) and with one, beside dense."""
    kinds = _kinds(("dense", "linear", *STATE_KINDS))
    kinds |= {f"{name}_no_conv": {"attention": name} for name in STATE_KINDS}
    kinds["linear_conv"] = {**KINDS["linear"], "attention": "linear", "short_conv": 4}
    return kinds


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
    suite = arg.strip()
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}.")
    config = ml_collections.ConfigDict()
    config.data_dir = ml_collections.config_dict.placeholder(str)
    config.cost = ml_collections.ConfigDict(
        dict(seq_lens=(256, 512, 1024, 2048, 4096), d_model=64, num_heads=2, repeats=3)
    )
    if suite == "tiny":
        config.tasks = _tiny_tasks()
        config.kinds = _kinds(("dense", "local"))
        config.kinds.local.kind_params.local_window_size = (2, 2)
        config.learning_rates = (3e-3, 1e-2)
        config.seeds = (0,)
        config.cost.update(seq_lens=(64, 128), repeats=1)
    elif suite == "short_conv":
        config.tasks = {"mqar_64_4": _mqar_64_4()}
        config.kinds = _short_conv_ablation()
        config.learning_rates = (3e-3,)
        config.seeds = CPU_SEEDS
        config.cost.update(seq_lens=(256, 512, 1024, 2048, 4096), d_model=64, num_heads=4)
    elif suite in ("quick", "cpu"):
        # quick is cpu's recall task at its first seed, reused if cpu follows in the same
        # workdir; each task sweeps its own rates (one each: the budget goes to seeds).
        config.tasks = {"mqar_64_4": _mqar_64_4()}
        if suite == "cpu":
            config.tasks.chars_256 = _chars_256()
        config.kinds = _kinds(KINDS, CPU_KIND_PARAMS)
        config.learning_rates = (3e-3,)
        config.seeds = (0,) if suite == "quick" else CPU_SEEDS
        config.cost.update(seq_lens=(256, 512, 1024, 2048, 4096), d_model=64, num_heads=4)
    elif suite == "lra":
        config.tasks = _lra_tasks()
        config.kinds = _kinds(KINDS, LONG_KIND_PARAMS)
        config.learning_rates = (5e-4, 1e-3, 2e-3)
        config.seeds = (0, 1, 2)
        config.cost.update(seq_lens=(1024, 2048, 4096, 8192, 16384), d_model=256, num_heads=4)
    else:
        config.tasks = _zoology_tasks()
        config.kinds = _kinds(KINDS)
        config.learning_rates = (1e-4, 3e-4, 1e-3, 3e-3)
        config.seeds = (0,)
        config.cost.update(seq_lens=(512, 1024, 2048, 4096, 8192), d_model=128, num_heads=2)
    return config
