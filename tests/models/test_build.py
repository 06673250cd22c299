"""build / default_config / count_params; configs: per-layer kinds, conversion, useful errors."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from attention_jax import models
from attention_jax.models.build import MODELS
from attention_jax.models.config import from_config_dict

from . import tiny


def _small(name, **changes):
    config = models.default_config(name)
    for key, value in {**tiny.SIZES[name], "d_model": tiny.D, "mlp_dim": 64, **changes}.items():
        config[key] = value
    return config


@pytest.mark.parametrize("name", tiny.FAMILIES)
def test_default_config_holds_the_dataclass_defaults_and_builds(name):
    config_class, model_class = MODELS[name]
    assert from_config_dict(config_class, models.default_config(name)) == config_class()
    model = models.build(_small(name), rngs=nnx.Rngs(0))
    assert isinstance(model, model_class) and isinstance(model.config, config_class)
    assert model.config.d_model == tiny.D


def test_build_takes_a_dataclass_too():
    config = tiny.config("lm")
    assert models.build(config, rngs=nnx.Rngs(0)).config is config


def test_count_params_equals_a_hand_count():
    D, F, V, H = 8, 16, 11, 4  # two heads of 4
    config = models.LanguageModelConfig(
        vocab_size=V, num_layers=1, d_model=D, num_heads=2, mlp_dim=F, max_len=8
    )
    norm = 2 * D  # scale and bias
    attention = 3 * (D * 2 * H + 2 * H) + (2 * H * D + D)  # q, k, v, out with biases
    ffn = (D * F + F) + (F * D + D)
    want = V * D + (norm + attention + norm + ffn) + norm
    assert models.count_params(models.LanguageModel(config, rngs=nnx.Rngs(0))) == want
    rms = models.LanguageModel(dataclasses.replace(config, norm="rmsnorm"), rngs=nnx.Rngs(0))
    assert models.count_params(rms) == want - 3 * D  # no biases in three norms


def test_hybrid_kinds_per_layer_with_parameters_per_kind():
    config = _small("lm", num_layers=4)
    config.attention = ["local", "dense"] * 2  # a list, as a command line or YAML gives
    config.kind_params = {"local": tiny.KIND_PARAMS["local"]}  # keyed by kind
    model = models.build(config, rngs=nnx.Rngs(0))
    layers = [block.attention for block in model.decoder.blocks]
    assert [layer.kind for layer in layers] == ["local", "dense"] * 2
    assert layers[0].kind_params["local_window_size"] == (4, 4)
    assert "local_window_size" not in layers[1].kind_params
    assert model.config.attention == ("local", "dense") * 2


def test_one_dict_of_kind_params_goes_to_every_layer():
    model = tiny.model("classifier", attention="local", kind_params={"local_window_size": (2, 1)})
    assert {b.attention.kind_params["local_window_size"] for b in model.encoder.blocks} == {(2, 1)}


def test_lora_and_soft_cap_reach_every_block():
    plain, tuned = tiny.model("lm"), tiny.model("lm", lora_rank=2, logits_soft_cap=0.5)
    owners = {path[:4] for path, _ in nnx.to_flat_state(nnx.state(tuned, nnx.LoRAParam))}
    assert owners == {
        ("decoder", "blocks", i, part) for i in (0, 1) for part in ("attention", "ffn")
    }
    lora = jax.tree.leaves(nnx.state(tuned, nnx.LoRAParam))
    assert models.count_params(tuned) - models.count_params(plain) == sum(x.size for x in lora)
    # On the base weights of `plain`, LoRA starts at zero: only the cap changes the logits.
    nnx.update(tuned, nnx.state(plain, nnx.Param))
    inputs = tiny.inputs("lm")
    assert np.abs(tiny.apply(tuned, "lm", inputs) - tiny.apply(plain, "lm", inputs)).max() > 1e-3


@pytest.mark.parametrize(
    "name, changes, match",
    [
        ("lm", dict(attention="nope"), "unknown attention kind 'nope'; choose one of .*flash"),
        ("classifier", dict(attention=("local", "nope")), "choose one of .*bigbird"),
        ("lm", dict(attention=("local", "dense", "dense")), "3 kinds .* for 2 layers"),
        ("encoder_decoder", dict(decoder_attention=("dense",)), "decoder_attention gives 1"),
        (
            "encoder_decoder",
            dict(attention=("local", "dense"), num_decoder_layers=3),
            r"attention \(for decoder_attention\) gives 2",
        ),
        ("vit", dict(num_heads=5), r"d_model \(32\) is not divisible by num_heads \(5\)"),
        ("lm", dict(num_kv_heads=3), r"multiple of num_kv_heads \(3\)"),
        ("lm", dict(dtype="int8"), "floating dtype"),
        ("lm", dict(positions="xpos"), "positions must be one of"),
        ("classifier", dict(pooling="max"), "pooling must be one of"),
        ("encoder_decoder", dict(cross_attention="luong"), "multihead"),
        ("vit", dict(patch_size=5), "patch_size"),
        ("lm", dict(activation="tanh"), "activation must be one of"),
    ],
)
def test_bad_settings_raise_at_build_time(name, changes, match):
    with pytest.raises(ValueError, match=match):
        models.build(_small(name, **changes), rngs=nnx.Rngs(0))


def test_unknown_config_key_lists_the_valid_ones():
    config = _small("lm")
    config.num_layer = 3
    with pytest.raises(ValueError, match=r"unknown config keys \['num_layer'\].*num_layers"):
        models.build(config, rngs=nnx.Rngs(0))


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'gpt'.*classifier, lm, encoder_decoder, vit"):
        models.default_config("gpt")
    config = _small("lm")
    config.name = "gpt"
    with pytest.raises(ValueError, match="'gpt'"):
        models.build(config, rngs=nnx.Rngs(0))
