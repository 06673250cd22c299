"""Tests of the real TFDS tasks (imdb_reviews, cifar10, lm1b) on offline mock data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from attention_jax.data import get_task

NUM_EXAMPLES = 10


def _mock_data():
    # USE_CODE builds random examples from each dataset's feature spec: nothing is downloaded.
    return tfds.testing.mock_data(
        num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
    )


def _utf8(text) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def _read(task, split, batch_size=3):
    """A split's source examples in order, and its pipeline batches joined along the batch axis."""
    source = task.source(split)
    examples = [source[i] for i in range(len(source))]
    batches = list(
        task.pipeline(
            split,
            batch_size=batch_size,
            shuffle=False,
            num_epochs=1,
            drop_remainder=False,
            prefetch=0,
        )
    )
    rows = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    return examples, rows


@pytest.mark.parametrize(
    "name, params, expected",
    [
        (
            "imdb_reviews",
            {},
            dict(kind="classification", vocab_size=257, num_classes=2, seq_len=4096),
        ),
        (
            "imdb_reviews",
            {"seq_len": 100},
            dict(kind="classification", vocab_size=257, num_classes=2, seq_len=100),
        ),
        (
            "cifar10",
            {},
            dict(kind="classification", vocab_size=256, num_classes=10, seq_len=1024),
        ),
        (
            "cifar10",
            {"grayscale": False},
            dict(kind="classification", vocab_size=256, num_classes=10, seq_len=3072),
        ),
        ("lm1b", {}, dict(kind="lm", vocab_size=257, num_classes=None, seq_len=512, packed=True)),
        (
            "lm1b",
            {"seq_len": 64},
            dict(kind="lm", vocab_size=257, num_classes=None, seq_len=64, packed=True),
        ),
    ],
)
def test_task_fields(tmp_path, name, params, expected):
    # get_task only describes the dataset; nothing is read until a split is opened.
    task = get_task(name, data_dir=tmp_path, **params)
    assert task.name == name
    assert task.splits == ("train", "test")
    for field, value in expected.items():
        assert getattr(task, field) == value, field


@pytest.mark.parametrize("split", ["train", "test"])
def test_imdb_reviews_tokens_are_truncated_utf8_bytes(tmp_path, split):
    seq_len = 15
    with _mock_data():
        task = get_task("imdb_reviews", data_dir=tmp_path, seq_len=seq_len)
        examples, rows = _read(task, split)

    assert rows["inputs"].shape == (NUM_EXAMPLES, seq_len)
    texts = [_utf8(ex["text"]) for ex in examples]
    # Mock reviews are a dozen or so bytes: the test only means something if some are cut and
    # some padded.
    assert any(len(text) > seq_len for text in texts)
    assert any(len(text) < seq_len for text in texts)
    for text, ex, tokens, length, label in zip(
        texts, examples, rows["inputs"], rows["lengths"], rows["label"]
    ):
        expected = text[:seq_len]
        assert length == len(expected)
        assert (tokens[:length] - 1).astype(np.uint8).tobytes() == expected
        assert np.all(tokens[length:] == 0)
        assert label == int(ex["label"])


def test_imdb_reviews_truncates_bytes_not_characters(tmp_path):
    # Mock text is ASCII, so a hand-made review checks that multi-byte characters are cut by byte.
    task = get_task("imdb_reviews", data_dir=tmp_path, seq_len=5)
    out = task.preprocess({"text": "héllo wörld", "label": np.int64(1)})
    assert (out["inputs"] - 1).astype(np.uint8).tobytes() == "héllo wörld".encode()[:5]
    assert out["label"] == 1


def _grayscale(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image, np.float64)
    return 0.2989 * rgb[..., 0] + 0.5870 * rgb[..., 1] + 0.1140 * rgb[..., 2]


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_grayscale_pixels(tmp_path, split):
    with _mock_data():
        task = get_task("cifar10", data_dir=tmp_path)
        examples, rows = _read(task, split)

    assert rows["inputs"].shape == (NUM_EXAMPLES, 1024)
    np.testing.assert_array_equal(rows["lengths"], 1024)
    for ex, tokens, label in zip(examples, rows["inputs"], rows["label"]):
        gray = _grayscale(ex["image"])
        pixels = tokens.reshape(32, 32)
        # The weights make exact .5 ties possible, and which way float error rounds a tie depends
        # on the order of the sum: a tie may go either way, every other pixel must match.
        tie = np.isclose(gray % 1, 0.5)
        np.testing.assert_array_equal(pixels[~tie], np.round(gray)[~tie])
        assert np.all(np.abs(pixels - gray) <= 0.5 + 1e-9)
        assert label == int(ex["label"])


def test_cifar10_colour_is_the_raw_image(tmp_path):
    with _mock_data():
        task = get_task("cifar10", data_dir=tmp_path, grayscale=False)
        examples, rows = _read(task, "train")

    assert rows["inputs"].shape == (NUM_EXAMPLES, 3072)
    np.testing.assert_array_equal(rows["lengths"], 3072)
    for ex, tokens, label in zip(examples, rows["inputs"], rows["label"]):
        np.testing.assert_array_equal(tokens, np.asarray(ex["image"]).ravel())
        assert label == int(ex["label"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_lm1b_rows_pack_the_texts_in_order(tmp_path, split):
    seq_len = 16
    with _mock_data():
        task = get_task("lm1b", data_dir=tmp_path, seq_len=seq_len)
        examples, rows = _read(task, split, batch_size=4)

    inputs, targets, loss_mask = rows["inputs"], rows["targets"], rows["loss_mask"]
    assert set(rows) == {"inputs", "targets", "loss_mask", "segment_ids"}
    assert inputs.shape == targets.shape == loss_mask.shape
    assert inputs.shape[1] == seq_len
    np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])
    # Scored: real targets that continue the same text (a new text starts unpredictably).
    lengths = [len(_utf8(ex["text"])) for ex in examples]
    text_of = np.repeat(np.arange(len(lengths)), lengths)
    for r, row_mask in enumerate(loss_mask):
        for j, scored in enumerate(row_mask):
            i = r * (seq_len + 1) + j
            assert scored == (i + 1 < len(text_of) and text_of[i] == text_of[i + 1])

    stream = np.concatenate(
        [np.frombuffer(_utf8(ex["text"]), np.uint8).astype(np.int64) + 1 for ex in examples]
    )
    # A row spans seq_len + 1 tokens of the stream: its inputs, then its last target.
    row_span = seq_len + 1
    packed = np.concatenate([inputs, targets[:, -1:]], axis=1).ravel()
    num_full = len(stream) // row_span
    assert num_full >= 3
    np.testing.assert_array_equal(packed[: num_full * row_span], stream[: num_full * row_span])
    # What is left of the stream fills one last row, zero-padded.
    rest = stream[num_full * row_span :]
    assert len(packed) == (num_full + (len(rest) > 0)) * row_span
    np.testing.assert_array_equal(packed[num_full * row_span :][: len(rest)], rest)
    assert np.all(packed[num_full * row_span + len(rest) :] == 0)
