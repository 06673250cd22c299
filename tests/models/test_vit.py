"""ViT: the patch embedding is a strided convolution; mean pooling; image shape errors."""

import jax
import numpy as np
import pytest

from attention_jax.models.vit import patchify

from . import tiny


def test_patch_embedding_equals_a_convolution_with_stride_patch_size():
    model = tiny.model("vit")
    images = tiny.inputs("vit")["images"]
    p, C, D = 4, 3, tiny.D
    kernel_HWIO = model.patch_embed.kernel[...].reshape(p, p, C, D)
    conv = jax.lax.conv_general_dilated(
        images, kernel_HWIO, (p, p), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    want = conv.reshape(tiny.B, -1, D) + model.patch_embed.bias[...]
    np.testing.assert_allclose(model.patch_embed(patchify(images, p)), want, atol=1e-5)


def test_mean_pooling_has_no_cls_token():
    model = tiny.model("vit", pooling="mean")
    assert model.cls_token is None and model.positions.learned.table.shape == (16, tiny.D)
    assert tiny.apply(model, "vit", tiny.inputs("vit")).shape == (tiny.B, 5)


def test_images_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"\[batch, 16, 16, 3\]"):
        tiny.model("vit")(np.zeros((2, 32, 32, 3), np.float32))
