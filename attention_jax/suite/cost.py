"""Cost of a kind: its whole model at the task's size, and its attention layer as n grows.

Both are measured in the suite's process, one case at a time after training, so no run's
timing shares the machine with another. Times are medians after warm-up; memory is XLA's
compiled buffer assignment; FLOPs are counted from the jaxpr with every loop step included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax import layers, models, ops
from attention_jax.bench import flops, measure, scaling
from attention_jax.ops.vendor import dispatch
from attention_jax.suite.plan import KindSpec
from attention_jax.train import config as config_lib
from attention_jax.train import optim, step

_MIB = 2**20


def task_cost(train_config, *, repeats: int = 5, task=None) -> dict[str, float]:
    """Parameters, forward FLOPs per token, train/eval step time, train-step memory and the
    implementation its attention ran on.

    The train step is the trainer's (forward, backward, optimizer update) on one real batch of
    the task at its batch size and length; the eval step is its forward pass and loss. `task`:
    the config's task when already loaded.
    """
    config = config_lib.from_config_dict(train_config)
    task = task or config_lib.load_task(config)
    model_config = config_lib.model_config_for(config, task)
    model = models.build(model_config, rngs=nnx.Rngs(config.seed))
    tx = optim.make_optimizer(config.optimizer, config.num_steps)
    schedule = optim.learning_rate_schedule(config.optimizer, config.num_steps)
    graphdef = nnx.graphdef(model)
    state = step.initial_state(model, tx)
    pipeline = task.pipeline("train", batch_size=config.batch_size, prefetch=0)
    batch = jax.tree.map(jnp.asarray, next(iter(pipeline)))
    train_fn = step.make_train_step(
        graphdef,
        tx,
        schedule,
        task.kind,
        config.optimizer.grad_accum_steps,
        moe_weights=model_config.moe_loss_weights(),
    )
    eval_fn = step.make_eval_step(graphdef, task.kind)
    with dispatch.recording() as choices:
        train_step = jax.jit(train_fn).lower(state, batch).compile()
    eval_step = jax.jit(eval_fn).lower(state, batch).compile()
    tokens = config.batch_size * task.seq_len
    return {
        "params": models.count_params(model),
        "flops_per_token": flops.count_flops(eval_fn, state, batch) / tokens,
        "train_step_ms": 1e3 * measure.median_seconds(train_step, state, batch, repeats=repeats),
        "eval_step_ms": 1e3 * measure.median_seconds(eval_step, state, batch, repeats=repeats),
        "peak_memory_mib": measure.peak_bytes(train_step) / _MIB,
        # The engines its exact-kind attention ran on here ('xla' for the other kinds).
        "implementation": "+".join(sorted({c.implementation for c in choices})) or "xla",
    }


def _layer_params(kind: KindSpec, name: str) -> dict:
    """kind_params of its layers of kind `name`: their own entry when the spec keys them by
    kind (as model configs read them), else all of them."""
    if any(key in ops.names() for key in kind.kind_params):
        return dict(kind.kind_params.get(name, {}))
    return dict(kind.kind_params)


def _layers(kind: KindSpec, d_model: int, num_heads: int, max_len: int):
    """One attention layer per distinct kind of the spec (two for a hybrid)."""
    return nnx.List(
        [
            layers.make_attention(
                d_model,
                layers.AttentionConfig(
                    num_heads=num_heads,
                    kind=name,
                    kind_params=_layer_params(kind, name),
                    max_len=max_len,
                    moe_attention=kind.moe_attention,
                    short_conv=kind.short_conv,
                ),
                rngs=nnx.Rngs(0),
            )
            for name in kind.kinds
        ]
    )


def length_sweep(
    kind: KindSpec,
    seq_lens,
    *,
    d_model: int,
    num_heads: int,
    batch: int = 1,
    repeats: int = 3,
) -> list[dict[str, float]]:
    """One self-attention layer of `kind` (projections included) at every n: bidirectional,
    or causal for a kind with no bidirectional form; a hybrid's layers one after the other.

    Returns, per n: forward and forward+backward seconds, forward+backward bytes and forward
    FLOPs. The backward pass differentiates both the input and the layer's parameters.
    """
    stack = _layers(kind, d_model, num_heads, max(seq_lens))
    causal = not all(ops.kind(name).bidirectional for name in kind.kinds)
    graphdef, params, rest = nnx.split(stack, nnx.Param, ...)

    def forward(params, x):
        for layer in nnx.merge(graphdef, params, rest, copy=True):
            x = layer(x, is_causal=causal)
        return x

    def loss(params, x):
        return jnp.sum(forward(params, x))

    grad = jax.grad(loss, argnums=(0, 1))
    points = []
    for n in seq_lens:
        x = jax.random.normal(jax.random.key(n), (batch, n, d_model))
        fwd = jax.jit(forward).lower(params, x).compile()
        bwd = jax.jit(grad).lower(params, x).compile()
        points.append(
            {
                "n": n,
                "fwd_s": measure.median_seconds(fwd, params, x, repeats=repeats),
                "fwd_bwd_s": measure.median_seconds(bwd, params, x, repeats=repeats),
                "fwd_bwd_bytes": measure.peak_bytes(bwd),
                "fwd_flops": flops.count_flops(forward, params, x),
            }
        )
    return points


def exponents(points: list[dict[str, float]]) -> dict[str, float]:
    """Fitted p of cost ~ n^p for time, memory and FLOPs over a length sweep."""
    ns = [p["n"] for p in points]
    return {
        f"exponent_{metric}": scaling.fit_exponent(ns, [p[metric] for p in points])
        for metric in ("fwd_bwd_s", "fwd_bwd_bytes", "fwd_flops")
    }
