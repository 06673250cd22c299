"""Compares the cost of attention kinds; see attention_jax/configs/cost.py for the options.

Kept short on purpose: the work is `attention_jax.bench.run_comparison`, importable in Colab.
"""

from absl import app, flags
from ml_collections import config_flags

from attention_jax import bench

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/cost.py:small")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/cost", "Where CSV, Markdown and PNG go.")


def main(argv):
    del argv
    c = _CONFIG.value
    _, table = bench.run_comparison(
        _WORKDIR.value,
        kinds=list(c.kinds),
        seq_lens=list(c.seq_lens),
        shape=bench.Shape(
            batch=c.batch,
            num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads,
            head_dim=c.head_dim,
            dtype=c.dtype,
            is_causal=c.is_causal,
            local_window_size=tuple(c.local_window_size) if c.local_window_size else None,
        ),
        kind_params=c.kind_params.to_dict(),
        baseline=c.baseline,
        warmup=c.warmup,
        repeats=c.repeats,
        memory_budget_bytes=int(c.memory_budget_gb * 2**30),
        backward=c.backward,
    )
    print(table)
    print(f"Wrote costs.csv, costs.md and costs.png to {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
