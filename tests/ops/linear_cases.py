"""Cases shared by the linear-attention tests: each library op paired with its float64
reference from linear_reference (which, unlike this module, never calls attention_jax)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attention_jax import ops

from .linear_reference import cosformer_np, elu_np, favor_np, relu_np, taylor_np

F32_TOL = dict(atol=1e-4, rtol=1e-4)
KINDS = ["elu", "relu", "taylor", "cosformer", "favor"]
FAVOR_FEATURES = 32


def make_case(kind, H, seq_len, seed, extra_len=0, orthogonal=True):
    """(op, ref_phi, jnp_phi, step_map) for kind: op(q, k, v, **kw) is the library call,
    ref_phi the float64 NumPy feature map, jnp_phi its JAX transcription, step_map the
    feature_map argument for linear / linear_step."""
    if kind in ("elu", "relu"):
        fn = dict(elu=elu_np, relu=relu_np)[kind]
        return (
            functools.partial(ops.linear, feature_map=kind),
            fn,
            functools.partial(fn, xp=jnp),
            kind,
        )
    if kind == "taylor":
        return (
            ops.based,
            taylor_np,
            functools.partial(taylor_np, xp=jnp),
            "taylor",
        )
    if kind == "cosformer":
        M = seq_len + extra_len
        return (
            functools.partial(ops.cosformer, max_len=M),
            functools.partial(cosformer_np, max_len=M),
            functools.partial(cosformer_np, max_len=M, xp=jnp),
            ops.feature_map("cosformer", max_len=M),
        )
    assert kind == "favor"
    P = ops.favor_projection(jax.random.key(seed), FAVOR_FEATURES, H, orthogonal=orthogonal)
    return (
        functools.partial(ops.performer, projection=P),
        functools.partial(favor_np, projection=np.asarray(P)),
        functools.partial(favor_np, projection=P, xp=jnp),
        ops.feature_map("favor", projection=P),
    )


def _lengths_as_arrays(kw):
    return {
        name: jnp.asarray(x, jnp.int32) if name.endswith("lengths") else x for name, x in kw.items()
    }


def _q(T=8):
    return jnp.ones((1, T, 2, 8))
