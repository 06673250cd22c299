"""Real TFDS datasets as LRA uses them, for machines that can download them.

Byte-level IMDb reviews (LRA Text), CIFAR-10 as grayscale pixel sequences (LRA Image) and lm1b as
byte-level language modelling. The preprocessing is plain NumPy on `tfds.data_source` examples,
so the same pipeline runs offline under `tfds.testing.mock_data` in the tests.
"""

import numpy as np

from attention_jax.data import chars

# ITU-R BT.601 luma weights, the ones tf.image.rgb_to_grayscale uses (LRA's Image task).
LUMA = np.array([0.2989, 0.5870, 0.1140])
PIXEL_VOCAB = 256


def _as_bytes(text) -> bytes:
    # Array-record sources give bytes; mock data and some versions give str.
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def text_classification(example, *, max_len: int) -> dict[str, np.ndarray]:
    """A review as byte tokens truncated to max_len (LRA Text), with its label."""
    tokens = chars.encode_bytes(_as_bytes(example["text"])[:max_len])
    return {"inputs": tokens, "label": np.int32(example["label"])}


def pixel_classification(example, *, grayscale: bool = True) -> dict[str, np.ndarray]:
    """An image as a raster-order sequence of 0..255 intensities (LRA Image), with its label.

    Grayscale (the luma weights LRA's TensorFlow pipeline used, rounded to the nearest level)
    gives H*W tokens; otherwise the channels of each pixel follow one another (H*W*3).
    """
    image = np.asarray(example["image"], np.float64)
    if grayscale:
        image = np.rint(image @ LUMA).clip(0, 255)
    return {"inputs": image.astype(np.int32).reshape(-1), "label": np.int32(example["label"])}


def text_document(example) -> dict[str, np.ndarray]:
    """A document as byte tokens, for packing into language-modelling rows."""
    return {"text": chars.encode_bytes(_as_bytes(example["text"]))}
