"""The masked next-token loss; classification uses it with one position per example."""

import jax
import jax.numpy as jnp
import optax


def next_token_loss(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array):
    """Mean cross-entropy and accuracy over the positions where `loss_mask` is set.

    Args:
      logits: float [B, T, V].
      targets: int [B, T].
      loss_mask: bool [B, T]; positions that count (queries in MQAR, real text in LM).

    Returns:
      (loss, accuracy, number of scored positions), float32 scalars.
    """
    weights = loss_mask.astype(jnp.float32)
    count = jnp.sum(weights)
    # A batch with nothing to score gives 0, not 0/0.
    denominator = jnp.maximum(count, 1.0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return jnp.sum(losses * weights) / denominator, jnp.sum(correct * weights) / denominator, count
