"""The state-carrying kinds through their records: `state_init` and `state_step` decode what
the op computes for the whole sequence (GQA, Hk != Hv, uneven pieces), the attention map is
the matrix the op applies to the values, and the record refuses inconsistent capabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

B, T, N, K, H, V = 2, 11, 4, 2, 8, 6
STATE_KINDS = [name for name in ops.names() if ops.kind(name).decoding is ops.Decoding.STATE]


def _inputs(kind, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (B, T, N, H))
    k = jax.random.normal(keys[1], (B, T, K, H))
    v = jax.random.normal(keys[2], (B, T, K, V))
    spec = ops.kind(kind).gates
    k, _ = spec.derive(k)  # unit keys where the kind wants them
    return q, k, v, spec.example(keys[3], B, T, K, H)


def test_the_five_state_kinds_are_registered_causal_only():
    assert set(STATE_KINDS) == {"retnet", "gla", "mamba2", "deltanet", "gated_deltanet"}
    for name in STATE_KINDS:
        record = ops.kind(name)
        assert record.causal and not record.bidirectional and record.time_exponent == 1.0


@pytest.mark.parametrize("kind", STATE_KINDS)
def test_stepping_the_record_state_equals_the_op(kind):
    record = ops.kind(kind)
    q, k, v, gates = _inputs(kind)
    want = record.op(q, k, v, is_causal=True, chunk_size=4, **gates)
    state = record.state_init(B, N, K, H, V)
    outs = []
    for a, b in ((0, 5), (5, T)):
        piece = {name: g[:, a:b] for name, g in gates.items()}
        out, state = record.state_step(state, q[:, a:b], k[:, a:b], v[:, a:b], **piece)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), want, rtol=2e-5, atol=2e-5)
    assert int(state.position[0]) == T


def test_retnet_steps_with_a_given_decay():
    record = ops.kind("retnet")
    q, k, v, _ = _inputs("retnet")
    decay = jnp.asarray([0.5, 0.9, 0.99, 1.0])
    want = record.op(q, k, v, is_causal=True, decay=decay)
    got, _ = record.state_step(record.state_init(B, N, K, H, V), q, k, v, decay=decay)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kind", ["gla", "gated_deltanet"])
def test_the_attention_map_is_the_matrix_the_op_applies(kind):
    q, k, v, gates = _inputs(kind, seed=1)
    v = v[..., :H]
    weights = ops.attention_map(kind, q, k, is_causal=True, **gates)  # [B, N, T, S]
    G = N // K
    want = ops.get(kind)(q, k, v, is_causal=True, **gates)
    got = jnp.einsum("bnts,bsnh->btnh", weights, jnp.repeat(v, G, axis=2))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Causal: no query reads a later key.
    assert np.abs(np.triu(np.asarray(weights), k=1)).max() == 0


def test_the_record_refuses_inconsistent_capabilities():
    op = ops.get("gla")
    pattern = ops.kind("gla").pattern
    with pytest.raises(ValueError, match="state_init and state_step"):
        ops.Kind("x", op, pattern, 1.0, bidirectional=False, decoding=ops.Decoding.STATE)
    with pytest.raises(ValueError, match="causal or bidirectional"):
        ops.Kind(
            "x",
            op,
            pattern,
            1.0,
            causal=False,
            bidirectional=False,
            decoding=ops.Decoding.NONE,
            no_decoding_reason="none",
        )
    with pytest.raises(ValueError, match="ops.Gates"):
        ops.Kind("x", op, pattern, 1.0, gates={"decay": "per_head"})
    with pytest.raises(ValueError, match="step_scales_key"):
        ops.Gates(step_scales_key=True)


def _fwd_bwd_temp_bytes(kind, n):
    x = jax.ShapeDtypeStruct((1, n, 2, 16), jnp.float32)
    gates = ops.kind(kind).gates

    def loss(q, k, v):
        k, derived = gates.derive(k)
        return jnp.sum(ops.get(kind)(q, k, v, is_causal=True, **derived) ** 2)

    grad = jax.grad(loss, argnums=(0, 1, 2))
    return jax.jit(grad).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("kind", STATE_KINDS)
def test_causal_forward_and_backward_memory_is_linear_in_length(kind):
    """Compiled temp memory of the gradient grows ~4x (not 16x) from n = 2048 to 8192."""
    small, large = _fwd_bwd_temp_bytes(kind, 2048), _fwd_bwd_temp_bytes(kind, 8192)
    assert large <= 4.5 * small, (small, large)
    # Below a single float32 [n, n] matrix (268 MB): GLA's saved [C, C, Hk] chunk weights take
    # 51 MB here, O(n * C * Hk), the most of the five.
    assert large < 8192 * 8192 * 4, large
