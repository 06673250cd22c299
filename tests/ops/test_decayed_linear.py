"""retnet, gla and mamba2 against a float64 NumPy token-by-token recurrence: chunkwise outputs
and gradients, chunk-size independence, decoding, gates at their limits, lengths, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops
from attention_jax.ops import decayed_linear

from . import decayed_reference as ref

KINDS = ("retnet", "gla", "mamba2")
TOL = dict(atol=2e-5, rtol=2e-5)


def _inputs(kind, B=2, T=13, N=4, K=2, Hk=6, Hv=5, seed=0, dtype=np.float32):
    """q, k, v, the op's gate keyword arguments, and the reference's per-step multiplier."""
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(B, T, N, Hk)), rng.normal(size=(B, T, K, Hk))
    v = rng.normal(size=(B, T, K, Hv))
    if kind == "retnet":
        gamma = rng.uniform(0.5, 1.0, size=N)
        gates, multiplier = {"decay": gamma}, ref.retnet_multiplier(gamma, B, T, Hk)
    elif kind == "gla":
        g = np.log(rng.uniform(0.3, 1.0, size=(B, T, K, Hk)))
        gates, multiplier = {"log_decay": g}, ref.gla_multiplier(g, N)
    else:
        a = np.log(rng.uniform(0.3, 1.0, size=(B, T, K)))
        gates, multiplier = {"log_decay": a}, ref.mamba2_multiplier(a, N, Hk)
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return (cast(q), cast(k), cast(v), {n: cast(x) for n, x in gates.items()}, multiplier)


@pytest.mark.parametrize("kind", KINDS)
def test_chunkwise_equals_the_recurrence_for_any_chunk_size(kind):
    q, k, v, gates, multiplier = _inputs(kind)
    want = ref.decayed_np(q, k, v, multiplier, scale=6**-0.5)
    op = jax.jit(getattr(ops, kind), static_argnames=("chunk_size", "is_causal"))
    for chunk in (1, 4, 13, 64):  # one token, a non-divisor, exactly T, more than T
        got = op(q, k, v, **gates, is_causal=True, chunk_size=chunk)
        np.testing.assert_allclose(got, want, **TOL, err_msg=f"chunk {chunk}")


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_inputs_accumulate_in_float32(kind):
    q, k, v, gates, multiplier = _inputs(kind, dtype=jnp.bfloat16)
    want = ref.decayed_np(*(np.asarray(x, np.float64) for x in (q, k, v)), multiplier, 6**-0.5)
    got = getattr(ops, kind)(q, k, v, **gates, is_causal=True, chunk_size=4)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_of_every_input_and_gate_equal_the_recurrences(kind):
    q, k, v, gates, _ = _inputs(kind, B=1, T=7, N=2, K=1, Hk=3, Hv=2, seed=1)
    name, gate = next(iter(gates.items()))
    N, Hk = q.shape[2], q.shape[3]

    def reference(q, k, v, gate):
        if kind == "retnet":
            multiplier = ref.retnet_multiplier(gate, 1, 7, Hk, xp=jnp)
        elif kind == "gla":
            multiplier = ref.gla_multiplier(gate, N, xp=jnp)
        else:
            multiplier = ref.mamba2_multiplier(gate, N, Hk, xp=jnp)
        return jnp.sum(jnp.sin(ref.decayed_np(q, k, v, multiplier, Hk**-0.5, xp=jnp)))

    def chunkwise(q, k, v, gate):
        out = getattr(ops, kind)(q, k, v, is_causal=True, chunk_size=3, **{name: gate})
        return jnp.sum(jnp.sin(out))

    want = jax.grad(reference, argnums=(0, 1, 2, 3))(q, k, v, gate)
    got = jax.jit(jax.grad(chunkwise, argnums=(0, 1, 2, 3)))(q, k, v, gate)
    for g, w, what in zip(got, want, ("q", "k", "v", name), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4, err_msg=what)


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_token_by_token_equals_the_chunkwise_form(kind):
    q, k, v, gates, _ = _inputs(kind)
    full = getattr(ops, kind)(q, k, v, **gates, is_causal=True, chunk_size=4)
    B, T, N, Hk = q.shape
    K, Hv = k.shape[2], v.shape[-1]
    if kind == "retnet":
        log = jnp.log(gates["decay"]).reshape(1, K, N // K, 1, 1)
        log_decay, groups = jnp.broadcast_to(log, (1, K, N // K, T, 1)), N // K
    elif kind == "gla":
        log_decay, groups = gates["log_decay"].transpose(0, 2, 1, 3)[:, :, None], 1
    else:
        log_decay, groups = gates["log_decay"].transpose(0, 2, 1)[:, :, None, :, None], 1
    state = decayed_linear.decay_state_init(B, K, Hk, Hv, decay_groups=groups)
    outs = []
    for start, stop in ((0, 5), (5, 6), (6, T)):  # a prompt, one token, the rest
        out, state = decayed_linear.decay_step(
            state,
            q[:, start:stop],
            k[:, start:stop],
            v[:, start:stop],
            log_decay[:, :, :, start:stop],
            scale=Hk**-0.5,
        )
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, **TOL)
    assert state.position.tolist() == [T] * B


def test_retnet_without_decay_is_causal_linear_attention_without_a_normaliser():
    q, k, v, _, _ = _inputs("retnet", K=4)
    got = ops.retnet(q, k, v, decay=jnp.ones(4), is_causal=True, chunk_size=4)
    scores = jnp.einsum("btnh,bsnh->bnts", q, k) * 6**-0.5
    want = jnp.einsum("bnts,bsnv->btnv", jnp.tril(scores), v)
    np.testing.assert_allclose(got, want, **TOL)


def test_very_negative_log_decays_over_64k_steps_stay_finite():
    T = 65_536
    q = k = jnp.ones((1, T, 1, 2))
    v = jnp.ones((1, T, 1, 2))
    a = jnp.full((1, T, 1), -1e4)  # the state forgets everything at every step
    out = jax.jit(ops.mamba2, static_argnames="is_causal")(q, k, v, log_decay=a, is_causal=True)
    assert bool(jnp.all(jnp.isfinite(out)))
    # Only the current token survives: o_t = scale * (q_t . k_t) v_t = 2**-0.5 * 2.
    np.testing.assert_allclose(out, 2**0.5, rtol=1e-5)


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
    live = ~junk[..., 0]
    np.testing.assert_allclose(
        jnp.where(live[..., None], got, 0), jnp.where(live[..., None], want, 0), **TOL
    )


@pytest.mark.parametrize(
    "kind, change, match",
    [
        ("retnet", dict(is_causal=False), "retnet: only is_causal=True"),
        ("gla", dict(mask=jnp.ones((1, 1, 13, 13), bool)), "gla: mask is not supported"),
        (
            "mamba2",
            dict(log_decay=jnp.zeros((2, 13, 3))),
            r"log_decay must be a float array of shape \[2, 13, 2\]",
        ),
        ("gla", dict(log_decay=jnp.full((2, 13, 2, 6), 0.5)), "log_decay must be <= 0"),
        ("retnet", dict(decay=jnp.full(4, 1.5)), r"decay must lie in \(0, 1\]"),
        ("retnet", dict(chunk_size=0), "chunk_size must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(kind, change, match):
    q, k, v, gates, _ = _inputs(kind)
    with pytest.raises(ValueError, match=match):
        getattr(ops, kind)(q, k, v, **{"is_causal": True, **gates, **change})


@pytest.mark.parametrize("kind", KINDS)
def test_gates_closed_over_by_a_jitted_function_are_checked_without_tracing_errors(kind):
    # Concrete gates captured by a jitted function are checked in NumPy at trace time.
    q, k, v, gates, multiplier = _inputs(kind)
    got = jax.jit(lambda q, k, v: getattr(ops, kind)(q, k, v, **gates, is_causal=True))(q, k, v)
    np.testing.assert_allclose(got, ref.decayed_np(q, k, v, multiplier, 6**-0.5), **TOL)
