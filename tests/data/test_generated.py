"""Every generated example passes an independent checker; seeds, splits and sizes behave."""

import subprocess
import sys

import numpy as np
import pytest

from attention_jax import data
from attention_jax.data import builder, generation
from tests.data import checkers

SIZES = dict(num_train=300, num_validation=40, num_test=40)


def _check(name, params):
    """The independent checker of a task, bound to its parameters."""
    if name == "mqar":
        return lambda ex: checkers.check_mqar(ex, **params)
    if name == "listops":
        return lambda ex: checkers.check_listops(ex, **params)
    if name in ("copying", "selective_copying"):
        return lambda ex: checkers.check_copying(ex, **params, selective=name != "copying")
    if name == "induction_heads":
        return lambda ex: checkers.check_induction_heads(ex, **params)
    return checkers.check_chars


def _examples(source):
    return [source[i] for i in range(len(source))]


def _digests(examples, key="inputs"):
    return {generation.example_digest(ex, key) for ex in examples}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


SYNTHETIC = ["mqar", "listops", "copying", "selective_copying", "induction_heads"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_stored_example_passes_the_checker_and_splits_are_disjoint(name, data_dir):
    task = data.get_task(name, data_dir=data_dir, **SIZES)
    config = data.generated_builder(name, data_dir=data_dir, **SIZES).builder_config
    check = _check(name, config.task_params())
    digests = []
    for split, size in zip(builder.SPLITS, SIZES.values()):
        examples = _examples(task.source(split))
        assert len(examples) == size
        for ex in examples:
            check(ex)
        digests.append(_digests(examples))
        assert len(digests[-1]) == size  # no repeats within a split
    assert len(set.union(*digests)) == sum(SIZES.values())  # nor across splits


@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_seed_same_data_other_seed_other_data(name, tmp_path, data_dir):
    sizes = dict(num_train=30, num_validation=5, num_test=5)
    first = _examples(data.get_task(name, data_dir=data_dir, **sizes).source("train"))
    again = _examples(data.get_task(name, data_dir=str(tmp_path), **sizes).source("train"))
    other = _examples(data.get_task(name, data_dir=data_dir, seed=1, **sizes).source("train"))
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not _digests(first) & _digests(other)


# The paper-size configs are large to store; their examples come from the same functions.
PAPER = [
    ("mqar", data.mqar_example, dict(seq_len=512, num_kv_pairs=64, vocab_size=8192)),
    ("mqar", data.mqar_example, dict(seq_len=64, num_kv_pairs=16, vocab_size=36)),
    (
        "listops",
        data.listops_example,
        dict(max_depth=10, max_args=10, min_length=500, max_length=2000),
    ),
    ("listops", data.listops_example, dict(max_depth=3, max_args=2, min_length=1, max_length=9)),
    ("selective_copying", data.copying_example, dict(seq_len=4096, num_tokens=16, vocab_size=16)),
    ("copying", data.copying_example, dict(seq_len=5, num_tokens=2, vocab_size=4)),
    ("induction_heads", data.induction_example, dict(seq_len=256, vocab_size=16)),
    ("induction_heads", data.induction_example, dict(seq_len=3, vocab_size=3)),
]


def _case_id(case):
    name, _, params = case
    return name + "-" + "-".join(f"{k}{v}" for k, v in params.items())


@pytest.mark.parametrize("name, draw, params", PAPER, ids=[_case_id(c) for c in PAPER])
def test_paper_and_edge_sizes_pass_the_checker(name, draw, params):
    rng = np.random.default_rng(7)
    kwargs = dict(params)
    if name in ("copying", "selective_copying"):
        kwargs["selective"] = name == "selective_copying"
    for _ in range(20):
        _check(name, params)(draw(rng, **kwargs))


def test_listops_lengths_and_labels_cover_their_range():
    rng = np.random.default_rng(0)
    params = dict(max_depth=10, max_args=10, min_length=32, max_length=256)
    examples = [data.listops_example(rng, **params) for _ in range(400)]
    lengths = [len(ex["inputs"]) for ex in examples]
    assert min(lengths) < 64 and max(lengths) > 192
    labels = np.array([ex["label"] for ex in examples])
    assert set(labels) == set(range(10))
    # MIN and MAX pull labels to the ends; still no class dominates.
    assert data.majority_class_rate(labels) < 0.3


def test_mqar_queries_follow_the_power_law():
    """Short gaps dominate, as in Zoology: most queries sit in the first quarter of the region."""
    rng = np.random.default_rng(0)
    offsets = []
    for _ in range(200):
        ex = data.mqar_example(rng, seq_len=256, num_kv_pairs=8, vocab_size=512)
        offsets.extend(np.flatnonzero(ex["loss_mask"]) - 16)
    offsets = np.array(offsets)
    assert np.all(offsets % 2 == 0)
    assert np.mean(offsets < (256 - 16) // 4) > 0.5


def test_chars_corpus_is_stdlib_source_split_by_module(data_dir):
    task = data.get_task("chars", data_dir=data_dir, seq_len=64)
    names = {}
    for split in builder.SPLITS:
        source = task.source(split)
        assert len(source) > 0
        examples = _examples(source)
        for ex in examples[:50]:
            checkers.check_chars({"text": np.asarray(ex["text"])})
        names[split] = examples
    text = data.decode_tokens(names["train"][0]["text"])
    assert "import" in text or '"""' in text
    assert not _digests(names["train"], "text") & _digests(names["test"], "text")
    assert task.vocab_size == 257 and task.kind == "lm" and task.packed


def test_majority_rate_of_a_split(data_dir):
    task = data.get_task("listops", data_dir=data_dir, **SIZES)
    labels = [int(task.source("test")[i]["label"]) for i in range(SIZES["num_test"])]
    want = np.bincount(labels).max() / len(labels)
    assert task.majority_rate("test") == pytest.approx(want)


def test_generation_does_not_depend_on_the_process():
    """Two interpreters with different hash seeds draw the same splits (no salted hashing)."""
    script = (
        "import functools, hashlib; from attention_jax import data; "
        "d = hashlib.sha256(); "
        "draws = [functools.partial(data.listops_example, max_depth=6, max_args=5, "
        "min_length=8, max_length=64), functools.partial(data.mqar_example, seq_len=64, "
        "num_kv_pairs=4, vocab_size=64)]; "
        "[d.update(ex['inputs'].tobytes()) for draw in draws "
        "for split in data.unique_splits(draw, 3, {'test': 20, 'train': 50}).values() "
        "for ex in split]; print(d.hexdigest())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and len(outputs.pop()) == 64
