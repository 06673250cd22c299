"""Evaluation over a whole split (or its first batches), the same on one host or many."""

import jax
import numpy as np

from attention_jax.train import hosts, sharding


def _eval_pipeline(task, split: str, batch_size: int, **shard):
    return task.pipeline(
        split,
        batch_size=batch_size,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        prefetch=0,
        **shard,
    )


def eval_batches(task, split, local_batch: int, limit: int | None):
    """This host's batches of one pass over `split` (rows or examples, packed or not).

    Hosts can hold one example more or less, and packed text a row more or less: a host that
    runs out while another has data gets an all-padding batch, so every host runs the same
    steps. Padding rows carry no loss (loss_mask or example_mask False), so sums stay exact.
    """
    iterator = iter(_eval_pipeline(task, split, local_batch))
    produced = 0
    while limit is None or produced < limit:
        batch = next(iterator, None)
        if not hosts.any_host(batch is not None):
            return
        if batch is None:  # shaped like the split's rows, with none of them
            whole = _eval_pipeline(task, split, 1, shard_index=0, shard_count=1)
            batch = jax.tree.map(lambda x: x[:0], next(iter(whole)))
        yield _pad_rows(batch, local_batch)
        produced += 1


def _pad_rows(batch, size: int):
    """A batch padded with empty rows to `size`."""
    rows = len(next(iter(batch.values())))
    batch = dict(batch)
    if "label" in batch:
        batch["example_mask"] = np.arange(size) < rows
    padded = {
        k: np.concatenate([v, np.zeros((size - rows, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    if "lengths" in padded:
        padded["lengths"] = np.maximum(padded["lengths"], 1)  # an empty row still needs a length
    return padded


def evaluate(eval_step, state, task, split, mesh, local_batch, limit=None):
    """Mean loss and accuracy over a split (or its first `limit` batches)."""
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in eval_batches(task, split, local_batch, limit):
        sums = eval_step(state, sharding.global_batch(batch, mesh))
        for name, value in jax.device_get(sums).items():
            totals[name] += float(value)
    count = max(totals["count"], 1.0)
    return {
        f"{split}/loss": totals["loss_sum"] / count,
        f"{split}/accuracy": totals["correct"] / count,
    }
