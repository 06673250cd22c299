"""Vendor kernels on the accelerator they are for, against our XLA engine.

Not part of the CPU test suite (`pytest` collects tests/ only): run on a GPU or TPU machine by
experiments/scripts/accelerator_check.sh, or `pytest tests_accelerator`. On a CPU it refuses
to run rather than pass without checking anything.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import models, ops
from attention_jax.ops.vendor import platform as platform_lib
from attention_jax.ops.vendor import tokamax as tokamax_lib

PLATFORM = platform_lib.detect()
if PLATFORM.name == "cpu":
    raise RuntimeError("tests_accelerator needs a GPU or TPU; the CPU tests are in tests/.")
VENDORS = {"gpu": ("cudnn", "pallas_gpu"), "tpu": ("pallas_tpu",)}[PLATFORM.name]
VENDORS += ("tokamax",) if tokamax_lib.installed() else ()
# Relative L2 error against the float32 XLA result: bfloat16 keeps ~3 significant digits.
# float32: tokamax on an H200 agreed to 1.0e-4 (output) and 2.0e-4 (gradients), not 1e-4.
TOLERANCE = {"bfloat16": 2e-2, "float16": 5e-3, "float32": 5e-4}


def _inputs(B, T, S, N, K, H, dtype, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (B, T, N, H), dtype)
    k = jax.random.normal(keys[1], (B, S, K, H), dtype)
    v = jax.random.normal(keys[2], (B, S, K, H), dtype)
    return q, k, v, jax.random.normal(keys[3], (B, T, N, H), jnp.float32)


def _value_and_grads(op, q, k, v, cotangent):
    def run(q, k, v):
        out, pullback = jax.vjp(op, q, k, v)
        return out, pullback(cotangent.astype(out.dtype))

    return jax.jit(run)(q, k, v)


def _relative_error(got, want):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


CASES = [
    # kind, params, contract arguments, (B, T, S, N, K, H), dtype
    ("flash", {}, {"is_causal": True}, (2, 2048, 2048, 8, 2, 64), "bfloat16"),
    ("flash", {}, {}, (2, 1024, 1024, 8, 8, 128), "bfloat16"),
    ("flash", {}, {"is_causal": True}, (1, 1000, 1000, 4, 4, 64), "float16"),
    ("dense", {}, {"is_causal": True}, (2, 1024, 1024, 8, 8, 64), "float32"),
    (
        "local",
        {"local_window_size": (255, 0)},
        {"is_causal": True},
        (2, 2048, 2048, 8, 2, 64),
        "bfloat16",
    ),
    ("flash", {}, {"key_value_seq_lengths": "half"}, (2, 1024, 1024, 8, 8, 64), "bfloat16"),
    ("bigbird", {"block_size": 128}, {"is_causal": True}, (1, 2048, 2048, 8, 8, 128), "bfloat16"),
    (
        "longformer",
        {"local_window_size": (256, 256), "global_positions": (0,)},
        {},
        (1, 2048, 2048, 8, 8, 128),
        "bfloat16",
    ),
]


def _runs(kind, implementation, q, k, v, params, arguments):
    try:
        ops.explain(kind, q, k, v, implementation=implementation, **params, **arguments)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("implementation", VENDORS)
@pytest.mark.parametrize("kind, params, arguments, shape, dtype", CASES)
def test_vendor_equals_xla(implementation, kind, params, arguments, shape, dtype):
    q, k, v, cotangent = _inputs(*shape, jnp.dtype(dtype))
    arguments = dict(arguments)
    if arguments.get("key_value_seq_lengths") == "half":
        arguments["key_value_seq_lengths"] = jnp.array([shape[2] // 2, shape[2]], jnp.int32)
    if not _runs(kind, implementation, q, k, v, params, arguments):
        pytest.skip(f"{implementation} does not serve this call (ops.explain says why)")
    got = _value_and_grads(
        lambda q, k, v: ops.get(kind)(
            q, k, v, implementation=implementation, **params, **arguments
        ),
        q,
        k,
        v,
        cotangent,
    )
    upcast = [x.astype(jnp.float32) for x in (q, k, v)]
    want = _value_and_grads(
        lambda q, k, v: ops.get(kind)(q, k, v, implementation="xla", **params, **arguments),
        *upcast,
        cotangent,
    )
    tolerance = TOLERANCE[dtype]
    assert _relative_error(got[0], want[0]) < tolerance, "output"
    for name, g, w in zip("qkv", got[1], want[1]):
        assert _relative_error(g, w) < 2 * tolerance, f"d{name}"


def test_automatic_choice_uses_the_vendor_kernel():
    q, k, v, _ = _inputs(1, 1024, 1024, 8, 8, 64, jnp.bfloat16)
    choice = ops.explain("flash", q, k, v, is_causal=True)
    print(choice)
    if PLATFORM.name == "tpu":
        assert choice.implementation == "pallas_tpu"
    elif PLATFORM.nvidia and PLATFORM.compute_capability >= (8, 0):
        assert choice.implementation == "cudnn"


def test_language_model_step_matches_xla():
    """A bfloat16 LM's loss and gradients with the automatic choice equal those with 'xla'."""
    tokens = jax.random.randint(jax.random.key(0), (2, 512), 0, 256)

    def loss_and_grads(implementation):
        config = models.LanguageModelConfig(
            attention="flash",
            implementation=implementation,
            d_model=256,
            num_heads=4,
            num_layers=2,
            max_len=512,
            dtype="bfloat16",
        )
        model = models.build(config, rngs=nnx.Rngs(0))

        def loss(model):
            logits = model(tokens[:, :-1]).astype(jnp.float32)
            labels = jax.nn.one_hot(tokens[:, 1:], logits.shape[-1])
            return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))

        return nnx.jit(nnx.value_and_grad(loss))(model)

    (auto_loss, auto_grads), (xla_loss, xla_grads) = loss_and_grads(None), loss_and_grads("xla")
    assert abs(float(auto_loss) - float(xla_loss)) < 2e-2 * abs(float(xla_loss))
    for got, want in zip(jax.tree.leaves(auto_grads), jax.tree.leaves(xla_grads)):
        assert np.all(np.isfinite(np.asarray(got, np.float32)))
        assert _relative_error(got, want) < 0.1
