"""Bad values in, honest values out, for every registered kind: whatever padding holds changes
nothing, a NaN in real data shows as NaN (never as a plausible 0), a non-positive scale is refused
or honoured, and huge logits stay finite under jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_jax import ops

from .reference import attention_np, random_qkv

# (B, T, S, N, K, H): tiny, MQA, and T = S for the self-attention-only kinds (strided).
SHAPE = (2, 16, 16, 2, 1, 8)
# Example 0 is unpadded; example 1 is padded from 11, inside a block of 4 and then whole blocks.
LENGTHS = (16, 11)
# Blocks of 4 give the exact kinds several blocks and a partly padded one; chunks of 4 do the same
# for the kernelized kinds' causal form. A kind missing here runs with its defaults; one that
# needs a parameter fails loudly with the ValueError that names it: add it here.
PARAMS = {
    "flash": dict(block_q=8, block_kv=4),
    "local": dict(local_window_size=(3, 3), block_q=4, block_kv=4),
    "block_sparse": dict(
        layout=np.abs(np.arange(4)[:, None] - np.arange(4)[None, :]) <= 1, block_size=4
    ),
    "longformer": dict(local_window_size=(2, 2), global_positions=(0,), block_q=4, block_kv=4),
    "strided": dict(stride=4, block_size=4),
    "bigbird": dict(block_size=4, num_window_blocks=1, num_global_blocks=1, num_random_blocks=1),
    "linear": dict(chunk_size=4),
    # A NumPy draw: the default (orthogonal) one would compile a QR for this test alone.
    "performer": dict(
        projection=np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32),
        chunk_size=4,
    ),
    "based": dict(chunk_size=4),
    "cosformer": dict(chunk_size=4),
    "linformer": dict(projected_len=4),
    "moba": dict(block_size=4, top_k=2),
    **{name: dict(chunk_size=4) for name in ("retnet", "gla", "mamba2", "deltanet")},
    "gated_deltanet": dict(chunk_size=4),
}
# Each program is compiled once and run on several inputs; no LLVM optimisation of the machine
# code (the same values up to rounding) about halves the compile time of these tiny programs.
FAST_COMPILE = dict(compiler_options={"xla_backend_optimization_level": 0})


def kind_cases():
    """(kind, is_causal) for every registered kind and every direction its record says it
    supports, so a new kind inherits every probe."""
    return [
        pytest.param(kind, is_causal, id=f"{kind}-{'causal' if is_causal else 'full'}")
        for kind in ops.names()
        for is_causal in (False, True)
        if (ops.kind(kind).causal if is_causal else ops.kind(kind).bidirectional)
    ]


def arguments(kind):
    """PARAMS of `kind` and, for a state-carrying kind, gates in the range a layer starts in."""
    gates = ops.kind(kind).gates
    B, _, S, _, K, H = SHAPE
    drawn = {} if gates is None else gates.example(jax.random.key(2), B, S, K, H)
    return {**PARAMS.get(kind, {}), **drawn}


@functools.cache
def _program(kind, is_causal):
    """jit(q, k, v, ct -> (out, d<out, ct>/d(q, k, v))) of `kind` with LENGTHS on both sides."""
    lengths = jnp.asarray(LENGTHS, jnp.int32)

    def attend(q, k, v):
        return ops.get(kind)(
            q,
            k,
            v,
            is_causal=is_causal,
            query_seq_lengths=lengths,
            key_value_seq_lengths=lengths,
            **arguments(kind),
        )

    def run(q, k, v, ct):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(ct)

    return jax.jit(run, **FAST_COMPILE)


def _inputs():
    q, k, v = random_qkv(0, *SHAPE)
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)
    return q, k, v, ct


def _padded():
    """Bool [B, T, 1, 1]: positions past LENGTHS (queries and keys alike, since T = S)."""
    return (np.arange(SHAPE[1])[None, :] >= np.asarray(LENGTHS)[:, None])[:, :, None, None]


@pytest.mark.parametrize("kind, is_causal", kind_cases())
def test_padding_holding_nan_or_inf_changes_nothing(kind, is_causal):
    """NaN, +Inf or -Inf in padded queries, keys and values give the output and gradients of
    zeros there: masking a padded key's score is not enough when 0 * NaN = NaN follows."""
    run = _program(kind, is_causal)
    q, k, v, ct = _inputs()
    padded = _padded()
    q, k, v = (jnp.where(padded, 0.0, x) for x in (q, k, v))
    want_out, want_grads = run(q, k, v, ct)
    for fill in (np.nan, np.inf, -np.inf):
        out, grads = run(*(jnp.where(padded, fill, x) for x in (q, k, v)), ct)
        assert np.isfinite(np.asarray(out)).all(), f"fill {fill}: output not finite"
        np.testing.assert_allclose(out, want_out, atol=1e-6, rtol=1e-6, err_msg=f"fill {fill}")
        for name, g, w in zip("qkv", grads, want_grads, strict=True):
            assert np.isfinite(np.asarray(g)).all(), f"fill {fill}: d{name} not finite"
            np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-6, err_msg=f"fill {fill}: d{name}")


@pytest.mark.parametrize("kind, is_causal", kind_cases())
def test_nan_in_real_data_gives_nan(kind, is_causal):
    """A NaN in a live query, key or value makes the rows that read it NaN (a diverging run must
    look diverged), and example 1, which never sees it, stays finite."""
    run = _program(kind, is_causal)
    q, k, v, ct = _inputs()
    # Query 3 reads key 3 in every pattern here (the diagonal is always in the band or window).
    t = 3
    for name in ("query", "key", "value"):
        qkv = dict(query=np.array(q), key=np.array(k), value=np.array(v))
        qkv[name][0, t, 0, 0] = np.nan
        out = np.asarray(run(*qkv.values(), ct)[0])
        # A NaN query reaches its own head; a NaN key or value every head of the kv head.
        heads = 0 if name == "query" else slice(None)
        assert np.isnan(out[0, t, heads]).any(), f"NaN {name} gave {out[0, t, heads]}"
        assert np.isfinite(out[1]).all(), f"NaN {name} in example 0 leaked into example 1"


@pytest.mark.parametrize("kind", ops.names())
def test_non_positive_scale_is_refused_or_honoured(kind):
    """A kind whose features carry sqrt(scale) (favor, taylor) refuses scale <= 0, naming the
    kind and the value; a softmax kind honours it (a negative temperature is still a softmax).
    Never a silent all-zero output."""
    q, k, v = random_qkv(0, *SHAPE)

    def attend(q, k, v, scale):
        # A Python constant: concrete, so the op can check it.
        causal = not ops.kind(kind).bidirectional
        return ops.get(kind)(q, k, v, scale=scale, is_causal=causal, **arguments(kind))

    honoured = []
    for scale in (-0.5, 0.0):
        try:
            jax.eval_shape(functools.partial(attend, scale=scale), q, k, v)  # traces only
        except ValueError as error:
            assert "scale" in str(error) and kind in str(error), str(error)
            continue
        honoured.append(scale)
    outs = jax.jit(lambda q, k, v: [attend(q, k, v, s) for s in honoured], **FAST_COMPILE)(q, k, v)
    for scale, out in zip(honoured, outs, strict=True):
        out = np.asarray(out)
        assert np.isfinite(out).all() and np.abs(out).max() > 0.1, f"scale {scale}: {out}"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda q, s: ops.performer(q, q, q, scale=s, **PARAMS["performer"]), id="performer"
        ),
        pytest.param(lambda q, s: ops.based(q, q, q, scale=s), id="based"),
        pytest.param(
            lambda q, s: ops.linear_step(
                ops.linear_state_init(2, 2, 8, feature_map="taylor"),
                q[:, 0],
                q[:, 0],
                q[:, 0],
                feature_map="taylor",
                scale=s,
            ),
            id="linear_step-taylor",
        ),
    ],
)
def test_sqrt_scale_maps_refuse_non_positive_scale_and_a_traced_one_gives_nan(call):
    """A concrete scale <= 0 is a ValueError with the value; a traced one cannot be checked,
    so it must at least show as NaN, not as a plausible 0."""
    q = jnp.ones((2, 4, 2, 8))
    for scale in (-1.0, 0.0, np.float32(-2.0)):
        with pytest.raises(ValueError, match=rf"scale must be positive.*{float(scale)}"):
            call(q, scale)
    out = jax.jit(call)(q, -1.0)
    out = out[0] if isinstance(out, tuple) else out
    assert np.isnan(np.asarray(out)).all()


def test_linear_step_passes_nan_through():
    """The decoding step, like the parallel form, turns a NaN query or key into NaN, not 0."""
    q, k, v = (x[:, 0] for x in random_qkv(0, 2, 1, 1, 2, 2, 8))
    step = jax.jit(functools.partial(ops.linear_step, feature_map="elu"))
    state = ops.linear_state_init(2, 2, 8)
    for name in ("query", "key"):
        q_, k_ = np.array(q), np.array(k)
        (q_ if name == "query" else k_)[0, 0, 0] = np.nan
        out, _ = step(state, q_, k_, v)
        assert np.isnan(np.asarray(out)[0, 0]).any(), f"NaN {name} gave {out[0, 0]}"
        assert np.isfinite(np.asarray(out)[1]).all()


# Logits ~1e10: float32's spacing there is 1024, so a max and an exp that round the logits
# differently disagree by far more than exp() can absorb (it overflows past 88).
HUGE = 1e5
# (B, T, S, N, K, H) and the dense call: every way the logits can end in a product that XLA
# recomputes (scale after a bfloat16 dot, the weights engine, a dot over head_dim 1 that XLA
# writes as a multiply), and the plain float32 engine.
HUGE_CASES = [
    pytest.param((2, 16, 16, 2, 1, 8), jnp.float32, False, id="float32"),
    pytest.param((2, 16, 16, 2, 1, 8), jnp.bfloat16, False, id="bfloat16"),
    pytest.param((2, 16, 16, 2, 1, 8), jnp.float32, True, id="return_weights"),
    pytest.param((2, 16, 16, 2, 1, 1), jnp.float32, False, id="head_dim_1"),
]


@pytest.mark.parametrize("shape, dtype, with_weights", HUGE_CASES)
def test_huge_logits_stay_finite_under_jit(shape, dtype, with_weights):
    """dense under jit, eager and (head_dim > 1) flash agree with float64 NumPy at logits ~1e10,
    each row all on its top key, and gradients stay finite."""
    q, k, v = random_qkv(0, *shape, dtype=dtype)
    q, k = (x * HUGE for x in (q, k))

    # No masks: with a length mask XLA:CPU happened to fuse differently and hide the bug.
    def attend(q, k, v):
        out = ops.dense(q, k, v, return_weights=with_weights)
        return out[0] if with_weights else out

    want = attention_np(q, k, v)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == jnp.float32 else dict(atol=1e-2, rtol=1e-2)
    runs = {"jit": jax.jit(attend), "eager": attend}
    if shape[-1] > 1 and dtype == jnp.float32:
        # Not at head_dim 1: flash's block dot becomes the same recomputed multiply there, and
        # its online softmax is not recentred (it still gives NaN at these logits).
        runs["flash"] = jax.jit(lambda q, k, v: ops.flash(q, k, v, block_q=4, block_kv=4))
    for name, run in runs.items():
        out = np.asarray(run(q, k, v), np.float64)
        np.testing.assert_allclose(out, want, **tol, err_msg=name)
    grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v)), (0, 1, 2)))(q, k, v)
    assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in grads)


def test_linformer_projections_of_different_lengths_are_named_as_linformers():
    q = jnp.ones((1, 8, 2, 4))
    e, f = jnp.ones((4, 8)), jnp.ones((3, 8))
    with pytest.raises(ValueError, match="linformer: key_projection and value_projection"):
        ops.linformer(q, q, q, key_projection=e, value_projection=f)
    with pytest.raises(ValueError, match="linformer: .*>= 1"):
        ops.linformer(q, q, q, key_projection=jnp.ones((0, 8)))
