"""Pure-function attention kinds sharing the calling convention of `jax.nn.dot_product_attention`.

out = ops.attention(q, k, v, kind='flash', is_causal=True)
"""

from attention_jax.ops.bigbird import bigbird, bigbird_layout
from attention_jax.ops.decayed_linear import DecayState, decay_state_init, decay_step
from attention_jax.ops.delta_rule import DeltaState, delta_state_init, delta_step
from attention_jax.ops.deltanet import deltanet
from attention_jax.ops.dense import dense
from attention_jax.ops.feature_maps import FeatureMap, favor_projection, feature_map
from attention_jax.ops.flash import flash
from attention_jax.ops.flax_adapter import flax_attention_fn
from attention_jax.ops.gated_deltanet import gated_deltanet
from attention_jax.ops.gates import Decay, Gates
from attention_jax.ops.gla import gla
from attention_jax.ops.grouped_matmul import grouped_matmul
from attention_jax.ops.kinds import Decoding, Kind, OwnedState
from attention_jax.ops.linear import based, cosformer, linear, performer
from attention_jax.ops.linear_recurrent import LinearState, linear_state_init, linear_step
from attention_jax.ops.linformer import linformer, linformer_projection
from attention_jax.ops.mamba2 import mamba2
from attention_jax.ops.maps import attention_map
from attention_jax.ops.moba import MoBACache, moba, moba_state_init, moba_step
from attention_jax.ops.registry import (
    DEFAULT_KIND,
    attention,
    get,
    kind,
    names,
    names_in_order,
    pattern_mask,
    register,
    unregister,
)
from attention_jax.ops.retnet import retnet, retnet_decays
from attention_jax.ops.sparse import block_sparse, local, longformer
from attention_jax.ops.strided import strided
from attention_jax.ops.vendor.dispatch import IMPLEMENTATIONS, Choice, explain
from attention_jax.ops.vendor.platform import Platform, interpret_kernels

__all__ = [
    "DEFAULT_KIND",
    "IMPLEMENTATIONS",
    "Choice",
    "Platform",
    "Decay",
    "DecayState",
    "DeltaState",
    "Decoding",
    "FeatureMap",
    "Gates",
    "Kind",
    "OwnedState",
    "LinearState",
    "MoBACache",
    "attention",
    "attention_map",
    "based",
    "bigbird",
    "bigbird_layout",
    "block_sparse",
    "cosformer",
    "decay_state_init",
    "decay_step",
    "delta_state_init",
    "delta_step",
    "deltanet",
    "dense",
    "explain",
    "favor_projection",
    "feature_map",
    "flash",
    "flax_attention_fn",
    "gated_deltanet",
    "get",
    "interpret_kernels",
    "gla",
    "grouped_matmul",
    "kind",
    "linear",
    "linear_state_init",
    "linear_step",
    "linformer",
    "linformer_projection",
    "local",
    "longformer",
    "mamba2",
    "moba",
    "moba_state_init",
    "moba_step",
    "names",
    "names_in_order",
    "pattern_mask",
    "performer",
    "register",
    "retnet",
    "retnet_decays",
    "strided",
    "unregister",
]
