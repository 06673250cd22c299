"""deltanet and gated_deltanet against a float64 NumPy token-by-token delta rule: chunkwise
outputs and gradients, chunk-size independence, decoding, beta at its limits, lengths, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from . import decayed_reference as ref

KINDS = ("deltanet", "gated_deltanet")
TOL = dict(atol=3e-5, rtol=3e-5)


def _inputs(kind, B=2, T=13, N=4, K=2, Hk=6, Hv=5, seed=0, dtype=np.float32):
    """q, k (unit rows, as the layer gives them), v, the op's gates, and the reference's."""
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(B, T, N, Hk)), rng.normal(size=(B, T, K, Hk))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(B, T, K, Hv))
    beta = rng.uniform(0.1, 1.0, size=(B, T, K))
    gates, alpha = {"beta": beta}, np.ones((B, T, K))
    if kind == "gated_deltanet":
        gates["log_decay"] = np.log(rng.uniform(0.5, 1.0, size=(B, T, K)))
        alpha = np.exp(gates["log_decay"])
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return cast(q), cast(k), cast(v), {n: cast(x) for n, x in gates.items()}, alpha


@pytest.mark.parametrize("kind", KINDS)
def test_chunkwise_equals_the_delta_rule_for_any_chunk_size(kind):
    q, k, v, gates, alpha = _inputs(kind)
    want = ref.delta_rule_np(q, k, v, gates["beta"], alpha, scale=6**-0.5)
    op = jax.jit(getattr(ops, kind), static_argnames=("chunk_size", "is_causal"))
    for chunk in (1, 4, 13, 64):
        got = op(q, k, v, **gates, is_causal=True, chunk_size=chunk)
        np.testing.assert_allclose(got, want, **TOL, err_msg=f"chunk {chunk}")


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_of_every_input_and_gate_equal_the_recurrences(kind):
    q, k, v, gates, _ = _inputs(kind, B=1, T=7, N=2, K=1, Hk=3, Hv=2, seed=1)
    names = sorted(gates)

    def reference(q, k, v, *gate_values):
        g = dict(zip(names, gate_values, strict=True))
        alpha = jnp.exp(g["log_decay"]) if "log_decay" in g else jnp.ones_like(g["beta"])
        return jnp.sum(jnp.sin(ref.delta_rule_np(q, k, v, g["beta"], alpha, 3**-0.5, xp=jnp)))

    def chunkwise(q, k, v, *gate_values):
        g = dict(zip(names, gate_values, strict=True))
        return jnp.sum(jnp.sin(getattr(ops, kind)(q, k, v, is_causal=True, chunk_size=3, **g)))

    args = (q, k, v, *(gates[n] for n in names))
    argnums = tuple(range(len(args)))
    want = jax.grad(reference, argnums=argnums)(*args)
    got = jax.jit(jax.grad(chunkwise, argnums=argnums))(*args)
    for g, w, what in zip(got, want, ("q", "k", "v", *names), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4, err_msg=what)


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_token_by_token_equals_the_chunkwise_form(kind):
    q, k, v, gates, _ = _inputs(kind)
    full = getattr(ops, kind)(q, k, v, **gates, is_causal=True, chunk_size=4)
    B, T, N, Hk = q.shape
    state = ops.delta_state_init(B, k.shape[2], Hk, v.shape[-1])
    outs = []
    for start, stop in ((0, 5), (5, 6), (6, T)):
        window = slice(start, stop)
        log_decay = gates.get("log_decay")
        out, state = ops.delta_step(
            state,
            q[:, window],
            k[:, window],
            v[:, window],
            gates["beta"][:, window],
            None if log_decay is None else log_decay[:, window],
            scale=Hk**-0.5,
        )
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, **TOL)
    assert state.position.tolist() == [T] * B


def test_beta_zero_keeps_the_state_and_beta_one_replaces_the_value_at_a_key():
    q, k, v, gates, _ = _inputs("deltanet", K=4)
    silent = ops.deltanet(q, k, v, beta=jnp.zeros_like(gates["beta"]), is_causal=True)
    np.testing.assert_array_equal(silent, 0.0)
    # With beta = 1 and every key the same unit vector, the state holds only the newest value:
    # o_t = scale * (q_t . k) v_t.
    same_k = jnp.broadcast_to(k[:, :1], k.shape)
    out = ops.deltanet(q, same_k, v, beta=jnp.ones_like(gates["beta"]), is_causal=True)
    want = jnp.einsum("btnh,btnh->btn", q, same_k)[..., None] * v * 6**-0.5
    np.testing.assert_allclose(out, want, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_keys_change_no_live_output(kind):
    q, k, v, gates, _ = _inputs(kind)
    lengths = jnp.array([13, 6])
    want = getattr(ops, kind)(q, k, v, **gates, is_causal=True, chunk_size=4)
    junk = jnp.arange(13)[None, :, None, None] >= lengths[:, None, None, None]
    k2, v2 = jnp.where(junk, jnp.nan, k), jnp.where(junk, 1e9, v)
    got = getattr(ops, kind)(
        q, k2, v2, **gates, is_causal=True, chunk_size=4, key_value_seq_lengths=lengths
    )
    live = ~junk
    np.testing.assert_allclose(jnp.where(live, got, 0), jnp.where(live, want, 0), **TOL)


@pytest.mark.parametrize(
    "kind, change, match",
    [
        ("deltanet", dict(is_causal=False), "deltanet: only is_causal=True"),
        ("deltanet", dict(beta=jnp.full((2, 13, 2), 1.5)), r"beta must lie in \[0, 1\]"),
        ("deltanet", dict(beta=jnp.ones((2, 13))), r"beta must be a float array of shape"),
        ("gated_deltanet", dict(log_decay=jnp.ones((2, 13, 2))), "log_decay must be <= 0"),
        ("gated_deltanet", dict(bias=jnp.zeros((1, 1, 13, 13))), "bias is not supported"),
    ],
)
def test_bad_arguments_are_refused(kind, change, match):
    q, k, v, gates, _ = _inputs(kind)
    with pytest.raises(ValueError, match=match):
        getattr(ops, kind)(q, k, v, **{"is_causal": True, **gates, **change})


@pytest.mark.parametrize("kind", KINDS)
def test_gates_closed_over_by_a_jitted_function_are_checked_without_tracing_errors(kind):
    q, k, v, gates, alpha = _inputs(kind)
    got = jax.jit(lambda q, k, v: getattr(ops, kind)(q, k, v, **gates, is_causal=True))(q, k, v)
    np.testing.assert_allclose(
        got, ref.delta_rule_np(q, k, v, gates["beta"], alpha, 6**-0.5), **TOL
    )
