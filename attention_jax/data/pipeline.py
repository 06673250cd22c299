"""grain input pipelines: per-host shard, seeded shuffle per epoch, pad or pack, batch, prefetch.

A pipeline is a `grain.IterDataset`; its iterator's `get_state()` is a small dict that orbax
saves with the model (`grain.checkpoint.CheckpointSave`), so a resumed run sees the same next
batches as the run that was interrupted.
"""

from collections.abc import Callable, Sequence

import grain
import jax
import numpy as np

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


def shuffle_seed(seed: int) -> int:
    """A well-mixed seed for grain's shuffle, which orders epoch e by seed + e.

    Without mixing, seed s at epoch 1 would replay seed s + 1 at epoch 0.
    """
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1, np.uint32)[0] >> 1)


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
    ds = grain.MapDataset.source(source)
    shard = host_shard(len(ds), shard_index, shard_count)
    # Shuffle and repeat the whole dataset, then take this host's share of the stream: the
    # hosts' batches at step s together hold the examples one host would have read, whatever
    # the host count. Each host still reads only its own examples (everything is lazy).
    if shuffle:
        ds = ds.shuffle(seed=shuffle_seed(seed))
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    ds = ds[shard]
    if preprocess is not None:
        ds = ds.map(preprocess)
    if pad_length is not None:
        ds = ds.map(lambda ex: pad_to(ex, pad_length))
    ids = ds.to_iter_dataset()
    if pack_length is not None:
        ids = grain.experimental.ConcatThenSplitIterDataset(
            ids.map(lambda ex: {"text": ex["text"]}), length_struct={"text": pack_length + 1}
        ).map(next_token_rows)
    ids = ids.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ids = grain.experimental.ThreadPrefetchIterDataset(ids, prefetch_buffer_size=prefetch)
    return ids
