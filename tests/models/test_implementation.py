"""A model config's `implementation` reaches every self-attention call, and is recorded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax import models, ops
from attention_jax.ops.vendor import dispatch
from attention_jax.suite import report


def _lm(implementation, attention="flash"):
    config = models.LanguageModelConfig(
        attention=attention,
        implementation=implementation,
        d_model=32,
        num_heads=2,
        num_layers=1,
        mlp_dim=64,
        max_len=64,
    )
    return models.build(config, rngs=nnx.Rngs(0))


def test_language_model_runs_its_attention_on_the_named_implementation():
    tokens = jax.random.randint(jax.random.key(0), (2, 48), 0, 256)
    with ops.interpret_kernels(), dispatch.recording() as choices:
        logits = _lm("pallas_tpu")(tokens)
    assert {c.implementation for c in choices} == {"pallas_tpu"}
    with dispatch.recording() as choices:
        want = _lm(None)(tokens)
    assert {c.implementation for c in choices} == {"xla"}
    np.testing.assert_allclose(logits, want, atol=2e-5, rtol=2e-5)


def test_named_implementation_is_checked_against_the_kinds_in_use():
    with pytest.raises(ValueError, match="kind 'linear' runs on"):
        models.LanguageModelConfig(attention=("flash", "linear"), implementation="cudnn")
    with pytest.raises(ValueError, match="unknown|runs on"):
        models.LanguageModelConfig(attention="flash", implementation="triton")
    with pytest.raises(ValueError, match="own option"):
        models.LanguageModelConfig(attention="flash", kind_params={"implementation": "xla"})


def test_decoding_chooses_automatically():
    """Decoding steps (one query against a cache) ignore the training implementation."""
    model = _lm("cudnn")  # cannot run on a CPU, so any decoding call through it would raise
    prompt = jnp.zeros((1, 4), jnp.int32)
    out = model.generate(prompt, 3, temperature=0.0)
    assert out.shape == (1, 7)


def test_results_say_which_implementation_ran_each_kind():
    xla_only = [{"kind": "dense", "implementation": "xla"}, {"kind": "linear"}]
    assert "'xla' (this library's engine) for every kind" in report.implementation_line(xla_only)
    mixed = [
        {"kind": "flash", "implementation": "cudnn"},
        {"kind": "local", "implementation": "cudnn"},
        {"kind": "bigbird", "implementation": "xla"},
    ]
    line = report.implementation_line(mixed)
    assert "'cudnn' for flash, local" in line and "'xla' for bigbird" in line
