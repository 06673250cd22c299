"""Bad settings fail as the config is checked or the model built, with one ValueError naming them.

Nothing here trains: configs are parsed as the command line leaves them, checked, and at most a
one-layer model is built.
"""

import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from attention_jax import models, train
from attention_jax.configs import mqar
from attention_jax.train import optim

# A one-layer LM small enough to build in milliseconds.
LM = dict(vocab_size=16, num_layers=1, max_len=16, d_model=8, num_heads=2, mlp_dim=16)


def _lm(**changes) -> models.LanguageModelConfig:
    """The one-layer LM with `changes`; a tuple of kinds gives one layer each."""
    kinds = changes.get("attention")
    layers = {"num_layers": len(kinds)} if isinstance(kinds, tuple) else {}
    return models.LanguageModelConfig(**{**LM, **layers, **changes})


def _cli(*overrides: str):
    """The tiny MQAR config as `--config.x=...` command-line overrides leave it."""
    argv = ["train", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict(
        "config", mqar.get_config("size=tiny"), flag_values=values, sys_argv=argv
    )
    values(argv)
    return values.config


# --- kind_params: every key reaches a layer, every value passes the op, at build --------------


@pytest.mark.parametrize(
    "attention, kind_params, match",
    [
        # The window under another kind's name used to leave local at its default window.
        ("local", {"longformer": {"local_window_size": (4, 0)}}, r"'longformer' applies to no"),
        (("local", "dense"), {"bigbird": {"block_size": 4}}, r"in use are \('local', 'dense'\)"),
        ("local", {"window": (4, 0)}, r"\['window'\] reach every layer"),
        ("local", {"local": {"window": (4, 0)}}, r"kind_params\['local'\] sets \['window'\]"),
        # One dict reaches every layer, and dense has no block size.
        (("bigbird", "dense"), {"block_size": 4}, r"\['block_size'\].*kind 'dense'"),
    ],
)
def test_kind_params_that_reach_no_layer_are_refused(attention, kind_params, match):
    with pytest.raises(ValueError, match=match):
        _lm(attention=attention, kind_params=kind_params)


@pytest.mark.parametrize(
    "attention, kind_params, match",
    [
        ("local", {"local_window_size": -1}, "local_window_size"),
        # performer passes **kwargs on to linear: only the traced call sees the name.
        ("performer", {"performer": {"chunk": 4}}, "'chunk'"),
        ("performer", {"num_features": 0}, "num_features"),
    ],
)
def test_kind_params_an_op_refuses_fail_at_build_not_at_the_first_step(
    attention, kind_params, match
):
    config = _lm(attention=attention, kind_params=kind_params)
    with pytest.raises(ValueError, match=match):
        models.build(config, rngs=nnx.Rngs(0))


def test_linformer_kind_params_fail_at_build_in_an_encoder():
    # Linformer has no causal form, so it is checked in the family that can use it.
    config = models.ClassifierConfig(
        attention="linformer", kind_params={"projected_len": 0}, num_layers=1, max_len=16
    )
    with pytest.raises(ValueError, match="projected_len"):
        models.build(config, rngs=nnx.Rngs(0))


def test_kind_params_keyed_by_the_kinds_in_use_build():
    config = _lm(attention=("local", "dense"), kind_params={"local": {"local_window_size": (2, 0)}})
    model = models.build(config, rngs=nnx.Rngs(0))
    assert model.decoder.blocks[0].attention.kind_params["local_window_size"] == (2, 0)


# --- model sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, match",
    [
        # A float head count used to pass the config and fail deep in jax with a TypeError.
        (dict(num_heads=2.0), r"num_heads must be >= 1 \(an integer\); got 2.0"),
        (dict(num_kv_heads=True), "num_kv_heads"),
        (dict(mlp_dim="16"), "mlp_dim"),
        (dict(max_len=0), "max_len"),
        (dict(dropout_rate=1.5), r"dropout_rate must be in \[0, 1\); got 1.5"),
        (dict(dropout_rate=-0.1), "dropout_rate"),
        (dict(logits_soft_cap=0.0), "logits_soft_cap"),
    ],
)
def test_model_sizes_out_of_range_are_refused_by_the_config(changes, match):
    with pytest.raises(ValueError, match=match):
        _lm(**changes)


# --- training config: every number in range, before any work ----------------------------------


def test_clip_norm_none_from_the_command_line_turns_clipping_off():
    config = train.from_config_dict(_cli("--config.optimizer.clip_norm=None"))
    assert config.optimizer.clip_norm is None
    assert (
        train.from_config_dict(_cli("--config.optimizer.clip_norm=0.5")).optimizer.clip_norm == 0.5
    )
    optim.make_optimizer(config.optimizer, num_steps=10)


@pytest.mark.parametrize(
    "override, match",
    [
        ("--config.optimizer.b2=1.5", r"optimizer.b2 must be in \[0, 1\); got 1.5"),
        ("--config.optimizer.b1=1.0", r"optimizer.b1 must be in \[0, 1\)"),
        ("--config.optimizer.learning_rate=inf", r"learning_rate must be > 0 and finite"),
        ("--config.optimizer.eps=0.0", "optimizer.eps"),
        ("--config.optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
        ("--config.optimizer.warmup_steps=-1", "optimizer.warmup_steps"),
        ("--config.optimizer.grad_accum_steps=0", "optimizer.grad_accum_steps"),
        ("--config.optimizer.clip_norm=0", "optimizer.clip_norm must be > 0 and finite, or None"),
        ("--config.optimizer.clip_norm=fast", "optimizer.clip_norm"),
        ("--config.optimizer.end_learning_rate_fraction=1.5", r"fraction must be in \[0, 1\]"),
        ("--config.seed=-1", r"config.seed must be in \[0, 2147483648\) \(an integer\); got -1"),
        ("--config.eval_batches=0", "config.eval_batches"),
        ("--config.checkpoint.keep=0", "config.checkpoint.keep"),
    ],
)
def test_train_numbers_out_of_range_are_refused(override, match):
    with pytest.raises(ValueError, match=match):
        train.from_config_dict(_cli(override))


@pytest.mark.parametrize(
    "override, match",
    [
        # TFDS used to fail on the empty split with an AssertionError while writing it.
        ("--config.task_params.num_train=0", r"mqar: num_train must be >= 1 \(an integer\); got 0"),
        ("--config.task_params.num_validation=0", "num_validation"),
        ("--config.task_params.seed=-1", "mqar: seed must be >= 0"),
        ("--config.seed=-1", "config.seed"),
    ],
)
def test_bad_run_settings_fail_before_the_workdir_exists(tmp_path, override, match):
    config = _cli(override, f"--config.data_dir={tmp_path / 'tfds'}")
    with pytest.raises(ValueError, match=match):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()
