"""Vision Transformer (Dosovitskiy et al. 2021): image patches as tokens.

The patch embedding is a reshape and a linear map, the same function as a convolution with
kernel = stride = patch size, and works for any attention kind over the patch sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_jax.models.config import ViTConfig
from attention_jax.models.transformer import AbsolutePositions, EncoderStack, pool


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H / p) * (W / p), p * p * C], patches in row-major order."""
    B, H, W, C = images.shape
    p = patch_size
    x = images.reshape(B, H // p, p, W // p, p, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, (H // p) * (W // p), p * p * C)


class ViT(nnx.Module):
    """Patch embedding, CLS token, positions, encoder blocks, final norm, linear head."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        self.config = config
        D, p = config.d_model, config.patch_size
        with_cls = config.pooling == "cls"
        seq_len = config.num_patches + (1 if with_cls else 0)
        typed = dict(dtype=config.compute_dtype, param_dtype=config.params_dtype, rngs=rngs)
        self.patch_embed = nnx.Linear(p * p * config.channels, D, **typed)
        init = nnx.initializers.normal(0.02)
        self.cls_token = (
            nnx.Param(init(rngs.params(), (D,), config.params_dtype)) if with_cls else None
        )
        self.positions = AbsolutePositions(config.positions, seq_len, D, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)
        self.encoder = EncoderStack(
            config, config.layer_kinds(config.num_layers), seq_len, rngs=rngs
        )
        self.head = nnx.Linear(D, config.num_classes, **typed)

    def __call__(self, images: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """Class logits, float32 [B, num_classes], of images [B, H, W, C] (H = W = image_size)."""
        c = self.config
        want = (c.image_size, c.image_size, c.channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(
                f"ViT: images must be [batch, {', '.join(map(str, want))}] (BHWC); got shape "
                f"{images.shape}. Build the model with image_size and channels of the data."
            )
        x_BND = self.patch_embed(patchify(images, c.patch_size))
        if self.cls_token is not None:
            cls_B1D = jnp.broadcast_to(self.cls_token[...], (x_BND.shape[0], 1, c.d_model))
            x_BND = jnp.concatenate([cls_B1D.astype(x_BND.dtype), x_BND], axis=1)
        x_BND = self.dropout(self.positions(x_BND), deterministic=deterministic)
        x_BND = self.encoder(x_BND, deterministic=deterministic)
        return self.head(pool(x_BND, c.pooling)).astype(jnp.float32)
