"""Decoder-only causal language model with optionally tied input and output embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.models import sampling
from attention_jax.models.config import LanguageModelConfig
from attention_jax.models.transformer import DecoderStack, Embedder, untied_head


class LanguageModel(nnx.Module):
    """Embeddings, causal decoder blocks, final norm, logits over the vocabulary."""

    def __init__(self, config: LanguageModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embedder = Embedder(config.vocab_size, config, config.max_len, rngs=rngs)
        kinds = config.layer_kinds(config.num_layers)
        self.decoder = DecoderStack(config, kinds, config.max_len, rngs=rngs)
        self.head = None if config.tie_embeddings else untied_head(config, config.vocab_size, rngs)

    def init_cache(self, batch: int, max_len: int, dtype=None) -> None:
        """Empties the decoding state for `batch` sequences of up to max_len tokens."""
        self.embedder.positions.init_cache(max_len)
        self.decoder.init_cache(batch, max_len, dtype=dtype or self.config.compute_dtype)

    def generate(self, prompt, steps: int, *, temperature=1.0, top_k=None, rng=None):
        """The prompt int [B, P] continued by `steps` tokens: int32 [B, P + steps].

        Args:
          prompt: int [B, P] in [0, vocab_size), P >= 1 (one length for the whole batch).
          steps: tokens to generate; P + steps <= config.max_len.
          temperature: 0 is greedy; higher flattens the distribution.
          top_k: sample among the k most likely tokens only; None for all.
          rng: PRNG key, needed when temperature > 0.
        """
        return sampling.generate(self, prompt, steps, temperature=temperature, top_k=top_k, rng=rng)

    def __call__(
        self,
        tokens: jax.Array,
        *,
        decode: bool = False,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Next-token logits, float32 [B, T, V].

        Args:
          tokens: int [B, T] in [0, vocab_size) (others raise, or under jit give NaN logits).
            Padding at the end needs no lengths: causal attention keeps it out of every earlier
            position.
          decode: tokens follow those already in the decoding state (`init_cache`); past its
            max_len, a ValueError, or under jit NaN logits.
          deterministic: disables dropout; default: the module's dropout setting.
        """
        x_BTD = self.embedder(tokens, decode=decode, deterministic=deterministic)
        x_BTD = self.decoder(x_BTD, decode=decode, deterministic=deterministic)
        logits = self.embedder.attend(x_BTD) if self.head is None else self.head(x_BTD)
        # Float32 logits: the loss's log-softmax over a large vocabulary needs the range.
        return logits.astype(jnp.float32)
