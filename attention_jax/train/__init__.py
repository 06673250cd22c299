"""Training: losses and metrics (the trainer builds on these)."""

from attention_jax.train.losses import classification_loss, next_token_loss

__all__ = ["classification_loss", "next_token_loss"]
