"""Tasks by name: where the data comes from, how an example becomes model input, and its sizes.

`get_task('mqar/small_s128_kv8', seed=1)` resolves a generated task (generated into `data_dir` on
first use, then read from array_record files); `get_task('imdb_reviews')` a real TFDS dataset.
`Task.pipeline(split, batch_size=...)` gives the grain batches a trainer consumes:

- `lm` tasks: `inputs`, `targets`, `loss_mask`, each [B, L] (loss only where the mask is set);
- `classification` tasks: `inputs` [B, L] zero-padded, `lengths` [B], `label` [B].
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from attention_jax.data import (
    builder,
    chars,
    copying,
    generation,
    induction,
    listops,
    mqar,
    pipeline,
    real,
)

GENERATED = {
    "mqar": mqar.Mqar,
    "listops": listops.Listops,
    "copying": copying.Copying,
    "selective_copying": copying.SelectiveCopying,
    "induction_heads": induction.InductionHeads,
    "chars": chars.Chars,
}
REAL = ("imdb_reviews", "cifar10", "lm1b")


# Splits up to this size are read into memory once: decoding a record costs ~0.1-0.25 ms, more
# than a small model's step takes per example on a CPU.
CACHE_BYTES = 512 * 2**20
_READ_CHUNK = 1024


def _split_bytes(source) -> float:
    """Stored size of a TFDS split (inf when unknown, so nothing unknown is cached)."""
    try:
        return float(source.dataset_info.splits[source.split].num_bytes)
    except (AttributeError, KeyError, TypeError):
        return float("inf")


def in_memory(source) -> list:
    """Every example of a random-access source, read in batches (several times faster)."""
    examples = []
    for start in range(0, len(source), _READ_CHUNK):
        ids = np.arange(start, min(len(source), start + _READ_CHUNK))
        examples.extend(pipeline.read_examples(source, ids))
    return examples


@dataclasses.dataclass(frozen=True)
class Task:
    """A dataset ready for training: its splits, preprocessing and sizes."""

    name: str
    kind: str  # "lm" or "classification"
    vocab_size: int
    seq_len: int
    num_classes: int | None
    splits: tuple[str, ...]
    source: Callable[[str], Sequence] = dataclasses.field(repr=False)
    preprocess: Callable | None = dataclasses.field(default=None, repr=False)
    packed: bool = False  # documents concatenated and cut into rows of seq_len (text LM)
    _in_memory: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def pipeline(self, split: str, *, batch_size: int, cache: bool | None = None, **kwargs):
        """`make_pipeline` over one split; kwargs: seed, shuffle, num_epochs, shard_index, ...

        `cache` reads the split into memory first; None (default) does so for splits up to
        CACHE_BYTES on disk.
        """
        if split not in self.splits:
            raise ValueError(f"{self.name} has splits {self.splits}, not {split!r}.")
        source = self.source(split)
        if split in self._in_memory:
            source = self._in_memory[split]
        elif cache or (cache is None and _split_bytes(source) <= CACHE_BYTES):
            source = self._in_memory[split] = in_memory(source)
        if {"pad_length", "pack_length"} & set(kwargs):
            raise ValueError(f"{self.name}: the task sets its own padding or packing length.")
        if self.packed:
            kwargs["pack_length"] = self.seq_len
        elif self.kind == "classification":
            kwargs["pad_length"] = self.seq_len
        return pipeline.make_pipeline(
            source, batch_size=batch_size, preprocess=self.preprocess, **kwargs
        )

    def majority_rate(self, split: str) -> float:
        """Accuracy of always answering the most common label (or scored target token)."""
        source = self.source(split)
        examples = (source[i] for i in range(len(source)))
        if self.kind == "classification":
            labels = [int(ex["label"]) for ex in examples]
        elif self.packed:
            labels = np.concatenate([ex["text"][1:] for ex in examples])
        else:
            labels = np.concatenate([ex["targets"][ex["loss_mask"]] for ex in examples])
        return generation.majority_class_rate(np.asarray(labels))


def generated_builder(name: str, *, data_dir: str | None = None, **overrides):
    """The TFDS builder of a generated task, `dataset/config` plus parameter overrides."""
    dataset, _, config_name = name.partition("/")
    if dataset not in GENERATED:
        raise ValueError(
            f"Unknown task {dataset!r}; generated: {sorted(GENERATED)}, real: {list(REAL)}."
        )
    builder_cls = GENERATED[dataset]
    configs = {config.name: config for config in builder_cls.BUILDER_CONFIGS}
    config_name = config_name or builder_cls.DEFAULT_BUILDER_CONFIG_NAME
    if config_name not in configs:
        raise ValueError(f"{dataset} has configs {sorted(configs)}, not {config_name!r}.")
    config = builder.with_overrides(configs[config_name], **overrides)
    builder_cls.validate(config)  # before TFDS creates any folder
    return builder_cls(config=config, data_dir=data_dir, file_format="array_record")


def _prepare_once_per_job(dataset_builder) -> None:
    """Host 0 generates first; the others then find the files (shared storage) or generate the
    same data themselves (host-local storage), never racing on one directory."""
    if jax.process_count() == 1:
        dataset_builder.download_and_prepare()
        return
    if jax.process_index() == 0:
        dataset_builder.download_and_prepare()
    multihost_utils.sync_global_devices(f"prepared {dataset_builder.name}")
    if jax.process_index() != 0:
        dataset_builder.download_and_prepare()


def _prepared_source(dataset_builder):
    """Generates the dataset once (a no-op when its files exist), then opens splits on demand."""

    @functools.cache
    def prepared():
        _prepare_once_per_job(dataset_builder)
        # A builder made before another host wrote the files has no splits: open a fresh one.
        return type(dataset_builder)(
            config=dataset_builder.builder_config,
            data_dir=dataset_builder.data_dir_root,
            file_format="array_record",
        )

    def source(split: str):
        return prepared().as_data_source(split)

    return source


def get_task(
    name: str, *, data_dir: str | None = None, seq_len: int | None = None, **params
) -> Task:
    """A task by name: `mqar/small_s128_kv8`, `listops/small`, `chars`, `imdb_reviews`, ...

    Args:
      name: a generated task `dataset[/config]` (see GENERATED) or a real dataset (see REAL).
      data_dir: where TFDS keeps datasets; None for its default (~/tensorflow_datasets).
      seq_len: the length of a generated sequence task (mqar, copying, induction_heads), of
        the rows of packed text (chars, lm1b), or where imdb_reviews is truncated.
      **params: config overrides of a generated task (seed=1, num_train=...), or `grayscale`
        for cifar10.
    """
    dataset = name.partition("/")[0]
    if dataset in REAL:
        unknown = sorted(set(params) - {"grayscale"})
        if unknown or (params and dataset != "cifar10"):
            raise ValueError(
                f"{dataset} takes no parameters {sorted(params)}; only cifar10 takes grayscale=."
            )
        return _real_task(dataset, data_dir=data_dir, seq_len=seq_len, **params)
    if seq_len is not None and dataset not in ("chars", "listops"):
        params["seq_len"] = seq_len  # a parameter of the generated sequence tasks
    dataset_builder = generated_builder(name, data_dir=data_dir, **params)
    config = dataset_builder.builder_config
    source = _prepared_source(dataset_builder)
    common = dict(name=f"{dataset}/{config.name}", splits=builder.SPLITS, source=source)
    if dataset == "chars":
        return Task(
            kind="lm",
            vocab_size=chars.VOCAB_SIZE,
            seq_len=seq_len or 256,
            num_classes=None,
            packed=True,
            **common,
        )
    if dataset == "listops":
        if seq_len is not None:
            raise ValueError("listops: lengths are set by min_length and max_length, not seq_len.")
        return Task(
            kind="classification",
            vocab_size=listops.VOCAB_SIZE,
            seq_len=config.max_length,
            num_classes=listops.NUM_CLASSES,
            **common,
        )
    return Task(
        kind="lm", vocab_size=config.vocab_size, seq_len=config.seq_len, num_classes=None, **common
    )


def _real_task(dataset: str, *, data_dir, seq_len, grayscale: bool = True) -> Task:
    def source(split):
        return tfds.data_source(dataset, split=split, data_dir=data_dir)

    if dataset == "imdb_reviews":
        seq_len = seq_len or 4096
        return Task(
            name=dataset,
            kind="classification",
            vocab_size=chars.VOCAB_SIZE,
            seq_len=seq_len,
            num_classes=2,
            splits=("train", "test"),
            source=source,
            preprocess=functools.partial(real.text_classification, max_len=seq_len),
        )
    if dataset == "cifar10":
        if seq_len is not None:
            raise ValueError("cifar10: the length is 1024 pixels (3072 in colour); drop seq_len.")
        return Task(
            name=dataset,
            kind="classification",
            vocab_size=real.PIXEL_VOCAB,
            seq_len=1024 if grayscale else 3072,
            num_classes=10,
            splits=("train", "test"),
            source=source,
            preprocess=functools.partial(real.pixel_classification, grayscale=grayscale),
        )
    return Task(
        name=dataset,
        kind="lm",
        vocab_size=chars.VOCAB_SIZE,
        seq_len=seq_len or 512,
        num_classes=None,
        splits=("train", "test"),
        source=source,
        preprocess=real.text_document,
        packed=True,
    )
