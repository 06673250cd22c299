"""Configs from the command line, abstract init, and what a model rebuilds from its config."""

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from attention_jax import models

from . import tiny


def _parse(name, *overrides):
    """The config as `--config.x=...` command-line overrides leave it (config_flags' parser)."""
    argv = ["prog", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict(
        "config", models.default_config(name), flag_values=values, sys_argv=argv
    )
    values(argv)
    return values.config


def test_command_line_overrides_take_tuples_and_none():
    config = _parse(
        "lm",
        "--config.attention=('local', 'dense')",
        "--config.positions=None",
        "--config.num_layers=2",
        "--config.lora_rank=4",
    )
    assert config.attention == ("local", "dense") and config.positions is None
    model = models.build(config, rngs=nnx.Rngs(0))
    assert [b.attention.kind for b in model.decoder.blocks] == ["local", "dense"]
    config = _parse("encoder_decoder", "--config.decoder_attention=local")
    assert config.decoder_attention == "local"


def test_bigbird_models_init_abstractly_and_rebuild_the_same_pattern():
    """The seed comes from the layer index, so any init of the same config computes the same."""
    abstract = nnx.eval_shape(lambda: tiny.model("lm", attention="bigbird"))
    assert [b.attention.kind_params["seed"] for b in abstract.decoder.blocks] == [0, 1]
    first, second = tiny.model("lm", attention="bigbird"), tiny.model("lm", 7, attention="bigbird")
    nnx.update(second, nnx.state(first))  # a restored checkpoint
    inputs = tiny.inputs("lm")
    np.testing.assert_array_equal(tiny.apply(second, "lm", inputs), tiny.apply(first, "lm", inputs))


def test_cross_attention_takes_its_own_kind_params_and_max_len():
    model = tiny.model(
        "encoder_decoder",
        cross_attention_kind="linformer",
        kind_params={"linformer": {"projected_len": 8}},
        max_len=40,
    )
    cross = model.decoder.blocks[0].cross_attention
    assert cross.linformer_e.shape == (8, 40)


def test_decoding_positions_past_the_model_are_refused_or_exact():
    learned = tiny.model("lm", positions="learned")
    with pytest.raises(ValueError, match="learned positions"):
        learned.init_cache(tiny.B, tiny.T + 1)
    # Sinusoidal positions are computed, not looked up: decoding past max_len stays exact.
    model = tiny.model("lm", positions="sinusoidal", max_len=4)
    tokens = tiny.inputs("lm")["tokens"][:, :6]
    model.init_cache(tiny.B, 6)
    steps = jnp.concatenate([model(tokens[:, t : t + 1], decode=True) for t in range(6)], 1)
    np.testing.assert_allclose(steps, model(tokens), atol=1e-4)


def test_causal_models_refuse_routing_that_sees_later_tokens():
    from attention_jax.models import config as model_config

    for moe in (
        {"num_experts": 4, "router": "expert_choice"},
        {"num_experts": 4, "batch_prioritized": True},
    ):
        with pytest.raises(ValueError, match="causal model must not see"):
            model_config.LanguageModelConfig(moe=moe)
    model_config.ClassifierConfig(moe={"num_experts": 4, "router": "expert_choice"})


def test_each_family_refuses_kinds_that_cannot_attend_its_way():
    with pytest.raises(ValueError, match=r"encoder attends both ways, which \['gla'\] cannot"):
        models.ClassifierConfig(attention=("dense", "gla"), num_layers=2)
    with pytest.raises(ValueError, match=r"encoder attends both ways, which \['retnet'\]"):
        models.ViTConfig(attention="retnet")
    with pytest.raises(ValueError, match=r"decoder attends causally, which \['linformer'\]"):
        models.LanguageModelConfig(attention="linformer")
    with pytest.raises(ValueError, match=r"cross attention attends both ways"):
        models.EncoderDecoderConfig(decoder_attention="gla", cross_attention_kind="deltanet")
    with pytest.raises(ValueError, match="unknown attention kind 'nope'"):
        models.EncoderDecoderConfig(cross_attention="additive", cross_attention_kind="nope")
    config = models.EncoderDecoderConfig(decoder_attention="gated_deltanet", short_conv=4)
    assert config.attention_config("gated_deltanet").short_conv == 4
