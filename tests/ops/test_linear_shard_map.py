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
    np.testing.assert_allclose(jax.jit(sharded)(*args), f(*args), atol=2e-5, rtol=2e-5)
    ct = jax.random.normal(jax.random.key(1), (B, T, N, H))

    def grads(g):
        return jax.grad(lambda q, k, v: jnp.sum(g(q, k, v, args[3]) * ct), (0, 1, 2))(*args[:3])

    for got, want in zip(jax.jit(lambda: grads(sharded))(), grads(f), strict=True):
        np.testing.assert_allclose(got, want, atol=5e-5, rtol=5e-5)
