"""The jitted training and evaluation steps over a functional state (params, rest, opt_state).

The model lives as a graph definition plus two states: `params` (what the optimizer updates)
and `rest` (everything else: dropout RNG counters, Performer features and their redraw count).
Splitting once and merging inside the step keeps Python work per step near zero.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attention_jax.train import losses


def model_outputs(model, batch, kind: str, *, deterministic: bool):
    """(loss, accuracy, scored count) of a model on a batch of either task kind."""
    if kind == "classification":
        logits = model(batch["inputs"], lengths=batch["lengths"], deterministic=deterministic)
        weights = batch.get("example_mask", jnp.ones(logits.shape[0], bool))
        return losses.next_token_loss(logits[:, None], batch["label"][:, None], weights[:, None])
    logits = model(batch["inputs"], deterministic=deterministic)
    return losses.next_token_loss(logits, batch["targets"], batch["loss_mask"])


def microbatches(batch, count: int):
    """[B, ...] -> [count, B / count, ...], microbatch k holding rows k, k + count, ...

    Strided rather than contiguous, so that every device keeps a share of every microbatch.
    """
    return jax.tree.map(
        lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch
    )


def make_train_step(graphdef, tx, schedule, kind: str, grad_accum_steps: int = 1):
    """train_step(state, batch) -> (state, metrics); state holds step, params, rest, opt_state."""

    def loss_fn(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        loss, accuracy, _ = model_outputs(model, batch, kind, deterministic=False)
        _, _, rest = nnx.split(model, nnx.Param, ...)
        return loss, (accuracy, rest)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, batch):
        params = state["params"]
        if grad_accum_steps == 1:
            (loss, (accuracy, rest)), grads = grad_fn(params, state["rest"], batch)
        else:

            def accumulate(carry, micro):
                grads_sum, rest = carry
                (loss, (accuracy, rest)), grads = grad_fn(params, rest, micro)
                return (jax.tree.map(jnp.add, grads_sum, grads), rest), (loss, accuracy)

            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, rest), (loss, accuracy) = jax.lax.scan(
                accumulate, (zeros, state["rest"]), microbatches(batch, grad_accum_steps)
            )
            grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
            loss, accuracy = loss.mean(), accuracy.mean()
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        metrics = {
            "train/loss": loss,
            "train/accuracy": accuracy,
            "train/grad_norm": optax.global_norm(grads),
            "train/learning_rate": schedule(state["step"]),
        }
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(params, updates),
            "rest": rest,
            "opt_state": opt_state,
        }
        return new_state, metrics

    return train_step


def make_eval_step(graphdef, kind: str):
    """eval_step(state, batch) -> sums (loss_sum, correct, count), exact over padded batches."""

    def eval_step(state, batch):
        model = nnx.merge(graphdef, state["params"], state["rest"])
        loss, accuracy, count = model_outputs(model, batch, kind, deterministic=True)
        return {"loss_sum": loss * count, "correct": accuracy * count, "count": count}

    return eval_step
