"""Mesh shapes and the parameter shardings the logical rules give a real model."""

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from attention_jax import models
from attention_jax.models import config as model_config
from attention_jax.train import sharding


def test_mesh_fills_the_minus_one_axis():
    assert sharding.MeshConfig().shape(8) == (8, 1, 1, 1)
    assert sharding.MeshConfig(data=-1, fsdp=2, tensor=2).shape(8) == (2, 2, 2, 1)
    assert sharding.MeshConfig(data=2, fsdp=4).shape(8) == (2, 4, 1, 1)


@pytest.mark.parametrize(
    "mesh, match",
    [
        (dict(data=-1, fsdp=-1), "at most one -1"),
        (dict(data=0), "positive"),
        (dict(data=-1, tensor=3), "multiple of 3 devices"),
        (dict(data=2, fsdp=2), "uses 4 devices, but 8"),
    ],
)
def test_impossible_meshes_are_refused(mesh, match):
    with pytest.raises(ValueError, match=match):
        sharding.MeshConfig(**mesh).shape(8)


def _specs(mesh_config, **model):
    mesh = sharding.make_mesh(mesh_config)
    config = model_config.LanguageModelConfig(
        vocab_size=64, max_len=16, num_layers=1, **{"d_model": 32, "num_heads": 4, **model}
    )
    params = nnx.state(nnx.eval_shape(lambda: models.build(config, rngs=nnx.Rngs(0))), nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(sharding.state_shardings(params, mesh))[0]
    return {"/".join(sharding.path_names(path)): s.spec for path, s in flat}


def test_fsdp_and_tensor_axes_land_where_the_rules_say():
    specs = _specs(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    block = "decoder/blocks/attention"
    assert specs[f"{block}/query/kernel"] == P("fsdp", "tensor", None)
    assert specs[f"{block}/query/bias"] == P("tensor", None)
    assert specs[f"{block}/out/kernel"] == P("tensor", None, "fsdp")
    assert specs["decoder/blocks/ffn/up/kernel"] == P("fsdp", "tensor")
    assert specs["decoder/blocks/ffn/down/kernel"] == P("tensor", "fsdp")
    assert specs["embedder/embed/embedding"] == P("tensor", "fsdp")
    assert specs["decoder/norm/scale"] == P(None)


def test_an_axis_that_does_not_divide_stays_whole():
    specs = _specs(sharding.MeshConfig(data=2, tensor=4), num_heads=2, d_model=32)
    assert specs["decoder/blocks/attention/query/kernel"] == P(None, None, None)
    assert specs["decoder/blocks/ffn/up/kernel"] == P(None, "tensor")  # mlp_dim 512 divides
