"""Pure-function attention kinds sharing the calling convention of `jax.nn.dot_product_attention`.

out = ops.attention(q, k, v, kind='flash', is_causal=True)
"""

from attention_jax.ops.bigbird import bigbird, bigbird_layout
from attention_jax.ops.dense import dense
from attention_jax.ops.flash import flash
from attention_jax.ops.flax_adapter import flax_attention_fn
from attention_jax.ops.registry import attention, get, names, pattern_mask, register
from attention_jax.ops.sparse import block_sparse, local, longformer
from attention_jax.ops.strided import strided

__all__ = [
    "attention",
    "bigbird",
    "bigbird_layout",
    "block_sparse",
    "dense",
    "flash",
    "flax_attention_fn",
    "get",
    "local",
    "longformer",
    "names",
    "pattern_mask",
    "register",
    "strided",
]
