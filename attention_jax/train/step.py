"""The jitted training and evaluation steps over a functional state (params, rest, opt_state).

The model lives as a graph definition plus two states: `params` (what the optimizer updates)
and `rest` (everything else: dropout RNG counters, Performer features and their redraw count).
Splitting once and merging inside the step keeps Python work per step near zero.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attention_jax.layers import moe
from attention_jax.train import losses


def initial_state(model, tx) -> dict:
    """The training state of a freshly built model: step 0, params, rest and optimizer state."""
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "rest": rest,
        "opt_state": tx.init(params),
    }


def model_outputs(model, batch, kind: str, *, deterministic: bool):
    """(loss, accuracy, scored count) of a model on a batch of either task kind."""
    if kind == "classification":
        logits = model(batch["inputs"], lengths=batch["lengths"], deterministic=deterministic)
        weights = batch.get("example_mask", jnp.ones(logits.shape[0], bool))
        return losses.next_token_loss(logits[:, None], batch["label"][:, None], weights[:, None])
    logits = model(batch["inputs"], deterministic=deterministic)
    return losses.next_token_loss(logits, batch["targets"], batch["loss_mask"])


def moe_statistics(model) -> dict[str, jax.Array]:
    """Routing statistics of the model's last call, averaged over its MoE layers ({} if none).

    Read right after the forward pass inside the same trace, so the losses are differentiable.
    """
    layers = jax.tree.leaves(
        nnx.state(model, moe.RoutingStats), is_leaf=lambda x: isinstance(x, dict) and "z_loss" in x
    )
    if not layers:
        return {}
    names = ("load_balancing_loss", "z_loss", "dropped_fraction")
    return {name: jnp.mean(jnp.stack([layer[name] for layer in layers])) for name in names}


def microbatches(batch, count: int):
    """[B, ...] -> [count, B / count, ...], microbatch k holding rows k, k + count, ...

    Strided rather than contiguous, so that every device keeps a share of every microbatch.
    """
    return jax.tree.map(
        lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch
    )


def make_train_step(
    graphdef, tx, schedule, kind: str, grad_accum_steps: int = 1, moe_weights=(0.0, 0.0)
):
    """train_step(state, batch) -> (state, metrics); state holds step, params, rest, opt_state.

    `moe_weights` (load balancing, z-loss) weigh the MoE layers' auxiliary losses, averaged
    over layers, into the loss that is differentiated; `train/loss` reports the task loss alone
    and `train/moe_aux_loss` the weighted auxiliary term.
    """

    def loss_sum_fn(params, rest, batch):
        # Sums, not means: microbatches can score different numbers of tokens, and the step
        # must equal one pass over the whole batch.
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss, accuracy, count = model_outputs(model, batch, kind, deterministic=False)
        routing = moe_statistics(model)
        total = loss
        if routing:
            routing["aux_loss"] = (
                moe_weights[0] * routing["load_balancing_loss"] + moe_weights[1] * routing["z_loss"]
            )
            total = loss + routing["aux_loss"]
        _, _, rest = nnx.split(model, nnx.Param, ...)
        return total * count, (loss * count, accuracy * count, count, rest, routing)

    grad_fn = jax.value_and_grad(loss_sum_fn, has_aux=True)

    def train_step(state, batch):
        params = state["params"]

        def accumulate(carry, micro):
            grads_sum, loss_sum, correct, count, rest = carry
            (_, (loss, right, scored, rest, routing)), grads = grad_fn(params, rest, micro)
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            return (grads_sum, loss_sum + loss, correct + right, count + scored, rest), routing

        zero = jnp.zeros((), jnp.float32)
        carry = (jax.tree.map(jnp.zeros_like, params), zero, zero, zero, state["rest"])
        if grad_accum_steps == 1:
            carry, routing = accumulate(carry, batch)
        else:
            carry, routing = jax.lax.scan(accumulate, carry, microbatches(batch, grad_accum_steps))
            routing = jax.tree.map(jnp.mean, routing)
        grads_sum, loss_sum, correct, count, rest = carry
        denominator = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denominator, grads_sum)
        loss, accuracy = loss_sum / denominator, correct / denominator
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        metrics = {
            "train/loss": loss,
            "train/accuracy": accuracy,
            "train/grad_norm": optax.tree.norm(grads),
            "train/learning_rate": schedule(state["step"]),
            **{f"train/moe_{name}": value for name, value in routing.items()},
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
        model = nnx.merge(graphdef, state["params"], state["rest"], copy=True)
        loss, accuracy, count = model_outputs(model, batch, kind, deterministic=True)
        return {"loss_sum": loss * count, "correct": accuracy * count, "count": count}

    return eval_step
