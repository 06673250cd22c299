"""The state-carrying kinds in the layer: gates computed from x as each paper writes them
(checked against a float64 NumPy restatement), the short convolution against a NumPy causal
convolution, and the layer equal to its op called with those gates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import layers, ops
from attention_jax.layers.short_conv import ShortConvolution
from attention_jax.layers.state_gates import StateGates

D, K, H = 12, 2, 4
X = jax.random.normal(jax.random.key(0), (2, 7, D))
Q = jax.random.normal(jax.random.key(1), (2, 7, 2 * K, H))
KEYS = jax.random.normal(jax.random.key(2), (2, 7, K, H))


def _np(x):
    return np.asarray(x, np.float64)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _unit(x):
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-6)


def _expected(spec: ops.Gates, gates: StateGates):
    """(q, k, gates) from the formulas, in float64 from the module's parameters."""
    x, q, k = _np(X), _np(Q), _np(KEYS)
    want = {}
    if spec.decay is ops.Decay.PER_DIMENSION:
        down = x @ _np(gates.decay_down.kernel[...])
        logits = np.einsum("btr,rkh->btkh", down, _np(gates.decay_up.kernel[...]))
        want["log_decay"] = _log_sigmoid(logits + _np(gates.decay_up.bias[...])) / 16.0
    if spec.decay is ops.Decay.PER_HEAD:
        dt = _softplus(x @ _np(gates.step.kernel[...]) + _np(gates.step_bias[...]))
        want["log_decay"] = -np.exp(_np(gates.log_rate[...])) * dt
        if spec.step_scales_key:
            k = k * dt[..., None]
    if spec.beta:
        logits = x @ _np(gates.beta.kernel[...]) + _np(gates.beta.bias[...])
        want["beta"] = 1.0 / (1.0 + np.exp(-logits))
    if spec.unit_norm_qk:
        q, k = _unit(q), _unit(k)
    return q, k, want


@pytest.mark.parametrize("kind", ["retnet", "gla", "mamba2", "deltanet", "gated_deltanet"])
def test_gates_follow_the_papers_formulas(kind):
    spec = ops.kind(kind).gates
    module = StateGates(spec, D, K, H, rngs=nnx.Rngs(3))
    q, k, gates = module(X, Q, KEYS)
    want_q, want_k, want = _expected(spec, module)
    assert set(gates) == set(want) == set(spec.arguments)
    np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k, want_k, rtol=1e-5, atol=1e-6)
    for name, value in want.items():
        np.testing.assert_allclose(gates[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    if "log_decay" in gates:
        assert (np.asarray(gates["log_decay"]) <= 0).all()


def test_mamba_step_and_rate_start_in_their_papers_ranges():
    module = StateGates(ops.kind("mamba2").gates, D, 64, H, rngs=nnx.Rngs(0))
    dt = np.asarray(jax.nn.softplus(module.step_bias[...]))
    rate = np.exp(np.asarray(module.log_rate[...]))
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert rate.min() >= 1.0 and rate.max() <= 16.0


def test_short_convolution_is_a_causal_depthwise_convolution_then_silu():
    conv = ShortConvolution(5, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(4), (2, 6, 5))
    w, xs = _np(conv.kernel[...]), _np(x)
    padded = np.concatenate([np.zeros((2, 2, 5)), xs], axis=1)
    pre = np.stack([sum(w[i] * padded[:, t + i] for i in range(3)) for t in range(6)], axis=1)
    want = pre / (1.0 + np.exp(-pre))
    np.testing.assert_allclose(conv(x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a decoding state: call init_cache"):
        conv(x, decode=True)


@pytest.mark.parametrize("kind", ["retnet", "gla", "mamba2", "deltanet", "gated_deltanet"])
def test_the_layer_is_its_op_with_the_gates_and_a_normalised_output(kind):
    layer = layers.MultiHeadAttention(D, 4, num_kv_heads=K, kind=kind, rngs=nnx.Rngs(0))
    x = X[:, :, :D]
    q, k, v = layer.query(x), layer.key(x), layer.value(x)
    q, k, gates = layer.gates(x, q, k)
    out = ops.get(kind)(q, k, v, is_causal=True, **gates)
    want = layer.out(layer.gates.output_norm(out))
    np.testing.assert_allclose(layer(x, is_causal=True), want, rtol=1e-5, atol=1e-5)


def test_the_state_kinds_are_refused_where_they_cannot_run():
    layer = layers.MultiHeadAttention(D, 4, kind="gla", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="gla: only is_causal=True"):
        layer(X)
    with pytest.raises(ValueError, match=r"routed attention .* does not support"):
        layers.AttentionConfig(num_heads=4, kind="gla", moe_attention={"num_experts": 2})
    with pytest.raises(ValueError, match="short_conv"):
        layers.AttentionConfig(num_heads=4, short_conv=0)


@pytest.mark.parametrize("kind", ["gla", "mamba2", "gated_deltanet"])
def test_the_derived_gates_of_the_cost_harness_are_in_range_and_differentiable(kind):
    spec = ops.kind(kind).gates
    k, gates = spec.derive(KEYS)
    assert set(gates) == set(spec.arguments)
    assert all(np.isfinite(np.asarray(g)).all() for g in gates.values())
    assert (np.asarray(gates["log_decay"]) <= 0).all()
    if spec.unit_norm_qk:
        np.testing.assert_allclose(jnp.linalg.norm(k, axis=-1), 1.0, rtol=1e-5)
    grad = jax.grad(lambda k: sum(jnp.sum(g) for g in spec.derive(k)[1].values()))(KEYS)
    assert np.abs(np.asarray(grad)).max() > 0
