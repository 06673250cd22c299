"""attention_jax: attention mechanisms in JAX/Flax, compared on quality against cost."""

from attention_jax import ops

__version__ = "0.1.0"

__all__ = ["ops"]
