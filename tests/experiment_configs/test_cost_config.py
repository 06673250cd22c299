"""The cost experiment's config parses its options and rejects unknown ones."""

import pytest

from attention_jax.configs import cost


def test_options_select_sizes_and_modes():
    assert max(cost.get_config("small").seq_lens) <= 2048
    full = cost.get_config("full,causal,bf16")
    assert max(full.seq_lens) == 32768 and full.is_causal and full.dtype == "bfloat16"
    assert not cost.get_config("fwd").backward


def test_window_and_torch_options():
    assert cost.get_config("window").local_window_size == (511, 0)
    assert cost.get_config("window=256").local_window_size == (255, 0)
    assert "local" in cost.get_config("window").kinds
    assert "torch.sdpa" in cost.get_config("torch").kinds


def test_sparse_option_adds_each_sparse_kind_with_its_params():
    config = cost.get_config("full,sparse")
    assert {"local", "longformer", "strided", "bigbird"} <= set(config.kinds)
    assert config.kind_params.bigbird.block_size == 64
    assert not config.local_window_size


def test_linear_option_reaches_64k_with_the_kernelized_kinds():
    config = cost.get_config("full,linear,causal")
    assert max(config.seq_lens) == 65536 and config.is_causal
    assert {"linear", "performer", "cosformer"} <= set(config.kinds)
    assert config.kind_params.performer.num_features == 256


@pytest.mark.parametrize(
    "arg",
    [
        "huge",
        "small,full",
        "window,torch",
        "window=0",
        "window=x",
        "window,sparse",
        "window,linear",
    ],
)
def test_bad_options_are_refused(arg):
    with pytest.raises(ValueError):
        cost.get_config(arg)
