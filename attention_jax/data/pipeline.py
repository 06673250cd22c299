"""grain input pipelines: per-host shard, seeded shuffle per epoch, pad or pack, batch, prefetch.

A pipeline is a `grain.IterDataset`; its iterator's `get_state()` is a small dict that orbax
saves with the model (`grain.checkpoint.CheckpointSave`), so a resumed run sees the same next
batches as the run that was interrupted.
"""

import sys
from collections.abc import Callable, Sequence

import grain
import jax
import numpy as np
from tensorflow_datasets.core.data_sources.array_record import ArrayRecordDataSource

from attention_jax.data.generation import Example


def host_shard(num_examples: int, shard_index: int | None, shard_count: int | None) -> slice:
    """The examples this host reads: every `shard_count`-th, starting at `shard_index`."""
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= index < count:
        raise ValueError(f"shard_index must be in [0, shard_count), got {index} of {count}.")
    if count > num_examples:
        raise ValueError(f"{count} hosts but only {num_examples} examples: each host needs one.")
    return slice(index, None, count)


class EpochOrder:
    """Position i of the example stream -> example index: epoch i // n in its own order.

    Each epoch is a NumPy permutation seeded by (seed, epoch), so seeds never replay each
    other's epochs, and a lookup costs nanoseconds once the epoch is drawn (grain's per-index
    shuffle costs tens of microseconds per example).
    """

    def __init__(self, num_examples: int, seed: int, shuffle: bool):
        self.num_examples, self.seed, self.shuffle = num_examples, seed, shuffle
        self._drawn = (-1, None)  # (epoch, order): one attribute, so reader threads see a pair

    def __call__(self, position) -> int:
        epoch, offset = divmod(int(position), self.num_examples)
        if not self.shuffle:
            return offset
        drawn = self._drawn
        if drawn[0] != epoch:  # a stream reads epochs in order, so one is kept
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            drawn = self._drawn = (epoch, order)
        return int(drawn[1][offset])


def pad_to(example: Example, length: int, *, field: str = "inputs") -> Example:
    """Pads `field` with zeros to `length` and records its true length; longer input is an error.

    Truncation is the caller's choice (a preprocessing step), never silent here.
    """
    tokens = example[field]
    if len(tokens) > length:
        raise ValueError(
            f"an example's {field} has {len(tokens)} tokens, more than the padded length {length}; "
            f"raise the length or truncate in preprocessing."
        )
    padded = np.zeros(length, tokens.dtype)
    padded[: len(tokens)] = tokens
    return {**example, field: padded, "lengths": np.int32(len(tokens))}


def next_token_rows(example: Example) -> Example:
    """A packed row of seq_len + 1 tokens as inputs/targets/loss_mask/segment_ids of seq_len.

    A target from the next document (or padding) is not scored: nothing in the current document
    predicts it. `segment_ids` numbers the documents in the row (0 for padding), for models that
    keep attention within a document.
    """
    text, segments = example["text"], example["text_segment_ids"]
    same_document = segments[1:] == segments[:-1]
    return {
        "inputs": text[:-1],
        "targets": text[1:],
        "loss_mask": same_document & (segments[1:] != 0),
        "segment_ids": segments[:-1],
    }


def make_pipeline(
    source: Sequence[Example],
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    preprocess: Callable[[Example], Example] | None = None,
    pad_length: int | None = None,
    pack_length: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    prefetch: int = 4,
) -> grain.IterDataset:
    """Batches of numpy arrays from a random-access `source` (e.g. `tfds.data_source`).

    Args:
      source: random-access examples (dicts of arrays).
      batch_size: examples per batch on this host.
      seed: shuffle seed; each epoch is shuffled differently.
      num_epochs: passes over the data; None repeats forever (training).
      preprocess: applied to each example before padding or packing.
      pad_length: pad `inputs` to this length and add `lengths` (classification).
      pack_length: concatenate `text` across examples and cut rows of pack_length + 1 tokens,
        returned as `inputs`/`targets`/`loss_mask`/`segment_ids` of length pack_length
        (language modelling; see `next_token_rows`).
      shard_index, shard_count: this host's shard; default `jax.process_index()` / `count()`.
        Every host must pass the same seed: the shuffled stream is shared and each host reads
        every shard_count-th example of it. A finite pass can leave hosts one example apart.
      drop_remainder: drop a last partial batch (training); keep it for exact evaluation.
      prefetch: batches prepared ahead in a background thread (0 for none).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if pad_length is not None and pack_length is not None:
        raise ValueError("pad_length and pack_length are alternatives; give one.")
    # The pipeline runs on example indices: shuffle and repeat the whole dataset, then take
    # this host's share of the stream, so the hosts' batches at step s together hold the
    # examples one host would have read, whatever the host count. Each host reads only its own
    # examples, and a batch of them at a time (grain's per-element cost is paid per batch).
    shard = host_shard(len(source), shard_index, shard_count)
    # An endless stream for training is as long as grain's own repeat() makes it.
    length = len(source) * num_epochs if num_epochs is not None else sys.maxsize
    order = EpochOrder(len(source), seed, shuffle)
    indices = grain.MapDataset.range(length)[shard].map(order)

    def prepare(example: Example) -> Example:
        example = preprocess(example) if preprocess is not None else example
        return pad_to(example, pad_length) if pad_length is not None else example

    if pack_length is None:
        batches = indices.batch(batch_size, drop_remainder=drop_remainder).map(
            lambda ids: _stack([prepare(ex) for ex in read_examples(source, ids)])
        )
        # Reading from memory needs no reader threads (their hand-offs cost more than the read).
        in_memory = isinstance(source, (list, tuple))
        ds = batches.to_iter_dataset(grain.ReadOptions(num_threads=0) if in_memory else None)
    else:
        texts = indices.map(lambda i: {"text": prepare(source[int(i)])["text"]})
        ds = grain.experimental.ConcatThenSplitIterDataset(
            texts.to_iter_dataset(), length_struct={"text": pack_length + 1}
        ).map(next_token_rows)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return ds


def read_examples(source: Sequence[Example], ids: np.ndarray) -> list[Example]:
    """The examples at `ids`; TFDS array_record sources read them in one call (~3x faster)."""
    ids = [int(i) for i in ids]
    if isinstance(source, ArrayRecordDataSource):
        try:
            return source.__getitems__(ids)
        except TypeError:  # the sources of tfds.testing.mock_data read one record at a time
            pass
    return [source[i] for i in ids]


def _stack(examples: list[Example]) -> Example:
    return {key: np.stack([np.asarray(ex[key]) for ex in examples]) for key in examples[0]}
