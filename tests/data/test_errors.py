"""Tests that bad task, split and pipeline parameters raise a ValueError naming the problem."""

import re

import numpy as np
import pytest

from attention_jax.data import (
    copying_example,
    generated_builder,
    get_task,
    induction_example,
    listops_example,
    majority_class_rate,
    make_pipeline,
    mqar_example,
    unique_splits,
)
from attention_jax.data.chars import RUNNING_PYTHON
from attention_jax.data.pipeline import pad_to


def _rng():
    return np.random.default_rng(0)


def _dataset_files(data_dir):
    """What a failed preparation left that TFDS could read as data.

    TFDS writes its own bookkeeping (`<dataset>/.config`) and empty folders before it calls the
    builder; those are harmless. A version folder (`1.0.0`, or `incomplete.*_1.0.0` while
    writing) or any other file is not.
    """
    return [
        path
        for path in data_dir.rglob("*")
        if "1.0.0" in path.name
        or (path.is_file() and ".config" not in path.relative_to(data_dir).parts)
    ]


def _escaped(*parts):
    return ".*".join(re.escape(part) for part in parts)


# --- mqar -----------------------------------------------------------------------------------

MQAR_ERRORS = [
    (
        dict(seq_len=128, num_kv_pairs=8, vocab_size=17),
        _escaped("vocab_size=17 gives only 7 distinct keys", "use vocab_size >= 18"),
    ),
    (
        dict(seq_len=16, num_kv_pairs=5, vocab_size=64),
        _escaped("4 * num_kv_pairs <= seq_len", "num_kv_pairs=5, seq_len=16"),
    ),
    (dict(seq_len=16, num_kv_pairs=0, vocab_size=64), _escaped("1 <= num_kv_pairs")),
    (dict(seq_len=15, num_kv_pairs=2, vocab_size=64), "seq_len must be even.*got 15"),
]


@pytest.mark.parametrize("params, match", MQAR_ERRORS)
def test_mqar_example_rejects(params, match):
    with pytest.raises(ValueError, match=match):
        mqar_example(_rng(), **params)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(vocab_size=17), "vocab_size=17 gives only 7 distinct keys"),
        # The default config has seq_len 128, so 40 pairs need 160 positions.
        (dict(num_kv_pairs=40), "num_kv_pairs=40, seq_len=128"),
    ],
)
def test_mqar_task_rejects_before_writing(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        get_task("mqar", data_dir=tmp_path, **overrides).source("train")
    assert _dataset_files(tmp_path) == []


@pytest.mark.parametrize("random_fillers", ["false", 0, None])
def test_mqar_rejects_a_random_fillers_that_is_not_a_bool(tmp_path, random_fillers):
    match = _escaped("random_fillers must be True", "or False (token 0", repr(random_fillers))
    with pytest.raises(ValueError, match=match):
        mqar_example(
            _rng(), seq_len=64, num_kv_pairs=4, vocab_size=64, random_fillers=random_fillers
        )
    with pytest.raises(ValueError, match=match):
        get_task("mqar", data_dir=tmp_path, random_fillers=random_fillers).source("train")
    assert _dataset_files(tmp_path) == []


def test_mqar_builder_rejects_odd_seq_len_before_writing(tmp_path):
    # get_task keeps seq_len for itself (see test_generated_task_rejects_seq_len), so an odd
    # length can only reach the config through the builder.
    with pytest.raises(ValueError, match="seq_len must be even.*got 129"):
        generated_builder("mqar", data_dir=tmp_path, seq_len=129).download_and_prepare()
    assert _dataset_files(tmp_path) == []


# --- listops, copying, induction heads ------------------------------------------------------

LISTOPS = dict(max_depth=10, max_args=10, min_length=32, max_length=256)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(min_length=300), _escaped("min_length <= max_length", "min_length=300")),
        (dict(min_length=0), _escaped("1 <= min_length", "min_length=0")),
        (dict(max_args=1), _escaped("max_args >= 2", "got 10 and 1")),
        (dict(max_depth=0), _escaped("max_depth >= 1", "got 0 and 10")),
        (dict(max_depth=1), "longest expression has 1 tokens"),
    ],
)
def test_listops_rejects(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        listops_example(_rng(), **{**LISTOPS, **overrides})
    with pytest.raises(ValueError, match=match):
        get_task("listops", data_dir=tmp_path, **overrides).source("train")
    assert _dataset_files(tmp_path) == []


@pytest.mark.parametrize("tokenization", ["LRA", "bpe", None])
def test_listops_rejects_an_unknown_tokenization(tmp_path, tokenization):
    match = _escaped("tokenization must be one of ('explicit', 'lra')", repr(tokenization))
    with pytest.raises(ValueError, match=match):
        listops_example(_rng(), **LISTOPS, tokenization=tokenization)
    with pytest.raises(ValueError, match=match):
        get_task("listops", data_dir=tmp_path, tokenization=tokenization).source("train")
    assert _dataset_files(tmp_path) == []


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize(
    "params, match",
    [
        (
            dict(seq_len=16, num_tokens=8, vocab_size=16),
            _escaped("2 * num_tokens + 1 <= seq_len", "num_tokens=8, seq_len=16"),
        ),
        (dict(seq_len=16, num_tokens=0, vocab_size=16), _escaped("1 <= num_tokens")),
        (dict(seq_len=16, num_tokens=4, vocab_size=3), "vocab_size=3 leaves no data tokens"),
    ],
)
def test_copying_example_rejects(params, match, selective):
    with pytest.raises(ValueError, match=match):
        copying_example(_rng(), **params, selective=selective)


@pytest.mark.parametrize("name", ["copying", "selective_copying"])
def test_copying_task_rejects_before_writing(tmp_path, name):
    with pytest.raises(ValueError, match="vocab_size=3 leaves no data tokens"):
        get_task(name, data_dir=tmp_path, vocab_size=3).source("train")
    assert _dataset_files(tmp_path) == []


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(seq_len=2, vocab_size=16), _escaped("seq_len must be >= 3", "got 2")),
        (dict(seq_len=8, vocab_size=2), "vocab_size=2 leaves no data tokens"),
    ],
)
def test_induction_example_rejects(params, match):
    with pytest.raises(ValueError, match=match):
        induction_example(_rng(), **params)


def test_boundary_parameters_are_accepted():
    """The smallest valid sizes draw an example, so the checks above are not off by one."""
    assert len(mqar_example(_rng(), seq_len=32, num_kv_pairs=8, vocab_size=18)["inputs"]) == 32
    assert (
        len(
            copying_example(_rng(), seq_len=9, num_tokens=4, vocab_size=4, selective=True)["inputs"]
        )
        == 9
    )
    assert len(induction_example(_rng(), seq_len=3, vocab_size=3)["inputs"]) == 3
    example = listops_example(_rng(), max_depth=1, max_args=2, min_length=1, max_length=1)
    assert len(example["inputs"]) == 1
    # The variants at the same limits: zero fillers, and a lone digit with no ] to drop.
    example = mqar_example(_rng(), seq_len=32, num_kv_pairs=8, vocab_size=18, random_fillers=False)
    assert len(example["inputs"]) == 32
    example = listops_example(
        _rng(), max_depth=1, max_args=2, min_length=1, max_length=1, tokenization="lra"
    )
    assert len(example["inputs"]) == 1
    # The shortest expression with an operator has 4 explicit tokens, 3 under "lra".
    example = listops_example(
        _rng(), max_depth=2, max_args=2, min_length=4, max_length=4, tokenization="lra"
    )
    assert len(example["inputs"]) == 3


# --- task names and parameters --------------------------------------------------------------


def test_unknown_task_name(tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'nope'.*imdb_reviews"):
        get_task("nope", data_dir=tmp_path)


def test_unknown_config_name(tmp_path):
    with pytest.raises(ValueError, match=_escaped("mqar has configs", "not 'nope'")):
        get_task("mqar/nope", data_dir=tmp_path)


def test_unknown_override(tmp_path):
    with pytest.raises(ValueError, match=_escaped("unknown parameters ['foo']")):
        get_task("mqar", data_dir=tmp_path, foo=1)


def test_listops_rejects_seq_len(tmp_path):
    with pytest.raises(ValueError, match="listops: lengths are set by min_length and max_length"):
        get_task("listops", data_dir=tmp_path, seq_len=256)


@pytest.mark.parametrize("name", ["mqar", "copying", "selective_copying", "induction_heads"])
def test_seq_len_reaches_the_config_and_is_checked_before_any_file(tmp_path, name):
    assert get_task(name, data_dir=tmp_path, seq_len=64).seq_len == 64
    with pytest.raises(ValueError, match="seq_len"):
        get_task(name, data_dir=tmp_path, seq_len=1)
    assert _dataset_files(tmp_path) == []


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("imdb_reviews", dict(grayscale=False), "only cifar10 takes grayscale"),
        ("lm1b", dict(foo=1), _escaped("takes no parameters ['foo']")),
        ("cifar10", dict(foo=1), _escaped("takes no parameters ['foo']")),
        ("cifar10", dict(seq_len=100), "cifar10: the length is 1024 pixels.*drop seq_len"),
    ],
)
def test_real_task_rejects_parameters(tmp_path, name, params, match):
    with pytest.raises(ValueError, match=match):
        get_task(name, data_dir=tmp_path, **params)


def test_pipeline_rejects_a_split_the_task_lacks(tmp_path):
    # Checked before the split is opened, so no data is needed.
    task = get_task("imdb_reviews", data_dir=tmp_path)
    with pytest.raises(ValueError, match=_escaped("splits ('train', 'test'), not 'validation'")):
        task.pipeline("validation", batch_size=1)


# --- split sizes ----------------------------------------------------------------------------


def _three_outputs(rng):
    return {"inputs": np.array([rng.integers(3)], np.int32)}


def test_unique_splits_too_small_task():
    with pytest.raises(
        ValueError, match="tiny: only 3 distinct examples found.*but 5 were asked for"
    ):
        unique_splits(_three_outputs, 0, {"train": 2, "test": 3}, description="tiny")


def test_generated_task_too_small_for_its_splits(tmp_path):
    # Vocabulary 3 leaves one data token, so an example differs only in where the first trigger
    # sits: 62 distinct examples at the default length 64, fewer than the 100 asked for.
    task = get_task(
        "induction_heads",
        data_dir=tmp_path,
        vocab_size=3,
        num_train=100,
        num_validation=1,
        num_test=1,
    )
    with pytest.raises(ValueError, match=r"only \d+ distinct examples.*but 102 were asked for"):
        task.source("train")
    assert _dataset_files(tmp_path) == []


def test_builder_too_small_for_its_splits(tmp_path):
    """Length 3 and vocabulary 3 allow a single example."""
    dataset_builder = generated_builder(
        "induction_heads",
        data_dir=tmp_path,
        seq_len=3,
        vocab_size=3,
        num_train=100,
        num_validation=1,
        num_test=1,
    )
    with pytest.raises(ValueError, match="only 1 distinct examples.*but 102 were asked for"):
        dataset_builder.download_and_prepare()


def test_unique_splits_rejects_negative_sizes():
    with pytest.raises(ValueError, match=_escaped("split sizes must be >= 0", "'test': -1")):
        unique_splits(_three_outputs, 0, {"train": 1, "test": -1})


@pytest.mark.parametrize("size", [0, -5, 2.5])
@pytest.mark.parametrize("split_size", ["num_train", "num_validation", "num_test"])
def test_generated_task_rejects_empty_splits_before_writing(tmp_path, split_size, size):
    # TFDS cannot write an empty split: it used to fail with an AssertionError while writing.
    with pytest.raises(ValueError, match=f"copying: {split_size} must be >= 1 \\(an integer\\)"):
        get_task("copying", data_dir=tmp_path, **{split_size: size})
    assert _dataset_files(tmp_path) == []


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_generated_task_rejects_a_seed_numpy_refuses_before_writing(tmp_path, seed):
    with pytest.raises(ValueError, match="mqar: seed must be >= 0"):
        get_task("mqar", data_dir=tmp_path, seed=seed)
    assert _dataset_files(tmp_path) == []


def test_majority_class_rate_of_no_labels():
    with pytest.raises(ValueError, match="no labels given"):
        majority_class_rate(np.array([], np.int64))


# --- pipeline -------------------------------------------------------------------------------


def _examples(n, length=4):
    return [{"inputs": np.arange(1, length + 1, dtype=np.int32)} for _ in range(n)]


def test_pad_to_rejects_a_long_example():
    with pytest.raises(ValueError, match="inputs has 5 tokens, more than the padded length 4"):
        pad_to({"inputs": np.arange(1, 6, dtype=np.int32)}, 4)


def test_pipeline_rejects_a_long_example_when_read():
    # Padding happens lazily, so the error comes from the first batch, not from make_pipeline.
    pipeline = make_pipeline(
        _examples(2, length=5), batch_size=1, pad_length=4, shuffle=False, num_epochs=1, prefetch=0
    )
    with pytest.raises(ValueError, match="5 tokens, more than the padded length 4"):
        next(iter(pipeline))


@pytest.mark.parametrize("batch_size", [0, -1])
def test_pipeline_rejects_batch_size(batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be >= 1, got {batch_size}"):
        make_pipeline(_examples(4), batch_size=batch_size)


def test_pipeline_rejects_pad_and_pack():
    with pytest.raises(ValueError, match="pad_length and pack_length are alternatives"):
        make_pipeline(_examples(4), batch_size=1, pad_length=8, pack_length=8)


@pytest.mark.parametrize("shard_index", [-1, 2, 3])
def test_pipeline_rejects_shard_index(shard_index):
    match = _escaped("shard_index must be in [0, shard_count)", f"got {shard_index} of 2")
    with pytest.raises(ValueError, match=match):
        make_pipeline(_examples(4), batch_size=1, shard_index=shard_index, shard_count=2)


def test_pipeline_rejects_more_shards_than_examples():
    with pytest.raises(ValueError, match="5 hosts but only 3 examples"):
        make_pipeline(_examples(3), batch_size=1, shard_index=0, shard_count=5)


# --- chars ----------------------------------------------------------------------------------


def test_chars_rejects_another_python(tmp_path):
    with pytest.raises(ValueError, match=_escaped("pinned to Python 3.0's", RUNNING_PYTHON)):
        get_task("chars", data_dir=tmp_path, python_version="3.0")
    assert _dataset_files(tmp_path) == []


def test_chars_config_of_another_python(tmp_path):
    other = "3.10" if RUNNING_PYTHON != "3.10" else "3.11"
    with pytest.raises(ValueError, match=_escaped(f"pinned to Python {other}'s")):
        get_task(f"chars/py{other}", data_dir=tmp_path).source("train")
    assert _dataset_files(tmp_path) == []


def test_chars_rejects_short_chunks(tmp_path):
    with pytest.raises(ValueError, match="chunk_len must be >= 2, got 1"):
        get_task("chars", data_dir=tmp_path, chunk_len=1).source("train")
    assert _dataset_files(tmp_path) == []


def test_listops_lengths_the_grammar_cannot_reach():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="longest expression has 7 tokens"):
        listops_example(rng, max_depth=2, max_args=5, min_length=10, max_length=20)
