"""Encoder classifier over token sequences (LRA text, ListOps), or over pairs (LRA retrieval).

Pairs use a dual encoder as in the Long Range Arena (Tay et al. 2021): both sequences go through
the same encoder, and the head sees [u, v, u * v, u - v] of their pooled encodings u, v.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.models.config import ClassifierConfig
from attention_jax.models.transformer import Embedder, EncoderStack, pool


class SequenceClassifier(nnx.Module):
    """Embeddings, encoder blocks, final norm, CLS or mean pooling, MLP head."""

    def __init__(self, config: ClassifierConfig, *, rngs: nnx.Rngs):
        self.config = config
        D = config.d_model
        with_cls = config.pooling == "cls"
        # A learned CLS vector goes in front of the tokens, so positions cover one more.
        seq_len = config.max_len + (1 if with_cls else 0)
        self.embedder = Embedder(config.vocab_size, config, seq_len, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.cls_token = (
            nnx.Param(init(rngs.params(), (D,), config.params_dtype)) if with_cls else None
        )
        self.encoder = EncoderStack(
            config, config.layer_kinds(config.num_layers), seq_len, rngs=rngs
        )
        typed = dict(dtype=config.compute_dtype, param_dtype=config.params_dtype, rngs=rngs)
        features = 4 * D if config.dual_encoder else D
        self.head_hidden = nnx.Linear(features, config.mlp_dim, **typed)
        self.head_out = nnx.Linear(config.mlp_dim, config.num_classes, **typed)

    def encode(
        self,
        tokens: jax.Array,
        *,
        lengths: jax.Array | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Pooled encoding [B, D] of int tokens [B, T] whose first `lengths` [B] are real."""
        prefix = None if self.cls_token is None else self.cls_token[...]
        x_BTD = self.embedder(tokens, prefix=prefix, deterministic=deterministic)
        seq_lengths = lengths
        if lengths is not None and prefix is not None:
            seq_lengths = lengths + 1
        x_BTD = self.encoder(x_BTD, seq_lengths=seq_lengths, deterministic=deterministic)
        return pool(x_BTD, self.config.pooling, lengths)

    def __call__(
        self,
        tokens: jax.Array,
        *,
        lengths: jax.Array | None = None,
        pair: jax.Array | None = None,
        pair_lengths: jax.Array | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Class logits, float32 [B, num_classes].

        Args:
          tokens: int [B, T] in [0, vocab_size) (others raise, or under jit give NaN logits).
          lengths: optional int [B]; tokens at or past the length are padding and change
            nothing.
          pair: int [B, T2], the second sequence; required with dual_encoder, refused without.
          pair_lengths: optional int [B], padding lengths of `pair`.
          deterministic: disables dropout; default: the module's dropout setting.
        """
        if (pair is None) == self.config.dual_encoder:
            raise ValueError(
                f"SequenceClassifier: dual_encoder={self.config.dual_encoder} "
                + ("needs a second sequence `pair`." if pair is None else "takes no `pair`.")
            )
        u_BD = self.encode(tokens, lengths=lengths, deterministic=deterministic)
        if pair is not None:
            v_BD = self.encode(pair, lengths=pair_lengths, deterministic=deterministic)
            u_BD = jnp.concatenate([u_BD, v_BD, u_BD * v_BD, u_BD - v_BD], axis=-1)
        logits = self.head_out(jax.nn.gelu(self.head_hidden(u_BD), approximate=False))
        return logits.astype(jnp.float32)
