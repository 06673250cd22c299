"""Encoder-decoder transformer (Vaswani et al. 2017) with multihead or additive cross-attention.

The encoder reads padded source tokens; the causal decoder cross-attends to its outputs with
the source padding hidden. Cross-attention is `MultiHeadAttention` of any kind, or Bahdanau's
additive attention (`cross_attention='additive'`) to compare the two on the same task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.models.config import EncoderDecoderConfig
from attention_jax.models.transformer import DecoderStack, Embedder, EncoderStack, untied_head


class EncoderDecoder(nnx.Module):
    """Source embeddings and encoder; target embeddings, decoder and logits over targets."""

    def __init__(self, config: EncoderDecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        L = config.max_len
        self.source_embedder = Embedder(config.source_vocab_size, config, L, rngs=rngs)
        self.encoder = EncoderStack(
            config, config.layer_kinds(config.num_encoder_layers), L, rngs=rngs
        )
        self.target_embedder = Embedder(config.target_vocab_size, config, L, rngs=rngs)
        self.decoder = DecoderStack(
            config,
            config.layer_kinds(config.num_decoder_layers, "decoder_attention"),
            L,
            cross_attention=config.cross_attention,
            cross_kind=config.cross_attention_kind,
            rngs=rngs,
        )
        self.head = (
            None if config.tie_embeddings else untied_head(config, config.target_vocab_size, rngs)
        )

    def encode(
        self,
        source: jax.Array,
        *,
        source_lengths: jax.Array | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Encoder outputs [B, S, D] of int source tokens [B, S] with padding lengths [B]."""
        x_BSD = self.source_embedder(source, deterministic=deterministic)
        return self.encoder(x_BSD, seq_lengths=source_lengths, deterministic=deterministic)

    def init_cache(self, batch: int, max_len: int, dtype=None) -> None:
        """Empties the decoder's state for `batch` target sequences of up to max_len tokens."""
        self.target_embedder.positions.init_cache(max_len)
        self.decoder.init_cache(batch, max_len, dtype=dtype or self.config.compute_dtype)

    def __call__(
        self,
        source: jax.Array | None,
        targets: jax.Array,
        *,
        source_lengths: jax.Array | None = None,
        encoded: jax.Array | None = None,
        decode: bool = False,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Next-target-token logits, float32 [B, T, V_target].

        Args:
          source: int [B, S] source tokens; may be None when `encoded` is given.
          targets: int [B, T], the decoder inputs (targets shifted right). Ids outside each
            vocabulary raise, or under jit give NaN logits.
          source_lengths: optional int [B]; source tokens at or past it are padding, hidden
            from the encoder and from cross-attention.
          encoded: [B, S, D] outputs of `encode`, to decode step by step without re-encoding.
          decode: targets follow those already in the decoding state (`init_cache`); past its
            max_len, a ValueError, or under jit NaN logits.
          deterministic: disables dropout; default: the module's dropout setting.
        """
        if encoded is None:
            if source is None:
                raise ValueError("EncoderDecoder: give the source tokens or their `encoded`.")
            encoded = self.encode(
                source, source_lengths=source_lengths, deterministic=deterministic
            )
        y_BTD = self.target_embedder(targets, decode=decode, deterministic=deterministic)
        y_BTD = self.decoder(
            y_BTD,
            encoded,
            context_lengths=source_lengths,
            decode=decode,
            deterministic=deterministic,
        )
        logits = self.target_embedder.attend(y_BTD) if self.head is None else self.head(y_BTD)
        return logits.astype(jnp.float32)
