"""Kernelized kinds under shard_map over batch and heads, with gradients (8 host CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from attention_jax import ops

from .reference import random_qkv

B, T, N, K, H = 4, 19, 8, 4, 8
CASES = [
    pytest.param("linear", dict(is_causal=True, chunk_size=5), id="linear-causal"),
    pytest.param("linear", dict(feature_map="relu"), id="linear-relu"),
    pytest.param("performer", dict(is_causal=True, chunk_size=8, num_features=32), id="performer"),
    pytest.param("based", dict(is_causal=True, chunk_size=4), id="based-causal"),
    pytest.param("cosformer", dict(is_causal=True, max_len=32), id="cosformer-causal"),
    pytest.param("linformer", dict(projected_len=6), id="linformer"),
]
SPECS = (P("data", None, "heads"),) * 3 + (P("data"),)


def _op(kind, kw):
    def f(q, k, v, kv_lengths):
        return ops.get(kind)(q, k, v, key_value_seq_lengths=kv_lengths, **kw)

    return f


def _args():
    q, k, v = random_qkv(0, B, T, T, N, K, H)
    return q, k, v, jnp.asarray([T, 7, 0, 12], jnp.int32)


@pytest.mark.parametrize("kind, kw", CASES)
def test_shard_map_over_batch_and_heads_equals_plain_call(kind, kw):
    """Heads split 4 ways keep GQA groups whole; the result and gradients do not change."""
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "heads"))
    f = _op(kind, kw)
    sharded = jax.shard_map(f, mesh=mesh, in_specs=SPECS, out_specs=P("data", None, "heads"))
    args = _args()
    ct = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, N, H)), jnp.float32)

    def outputs_and_grads(g):
        def run(args, ct):
            out, g_vjp = jax.vjp(lambda q, k, v: g(q, k, v, args[3]), *args[:3])
            # d/dq, d/dk, d/dv of sum(out * ct).
            return out, g_vjp(ct)

        return jax.jit(run)(args, ct)

    # The unsharded call is jitted too, as its own program: eager, it would compile op by op.
    # What is compared is sharded against unsharded; test_linear covers jit against eager.
    got, want = outputs_and_grads(sharded), outputs_and_grads(f)
    np.testing.assert_allclose(got[0], want[0], atol=2e-5, rtol=2e-5)
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, w, atol=5e-5, rtol=5e-5)
