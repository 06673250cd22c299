"""grain pipelines: seeded shuffling, batching, padding, packing, host shards and resumption."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from attention_jax.data import pipeline

RNG = np.random.default_rng(0)
# A source of 37 examples with distinct ids and ragged token lists.
SOURCE = [
    {"inputs": RNG.integers(1, 9, size=1 + i % 7).astype(np.int32), "id": np.int32(i)}
    for i in range(37)
]


def _ids(ds):
    return [int(i) for batch in ds for i in batch["id"]]


def _pipe(**kwargs):
    kwargs = dict(batch_size=4, pad_length=8, prefetch=0) | kwargs
    return pipeline.make_pipeline(SOURCE, **kwargs)


def test_an_epoch_is_a_seeded_permutation():
    one = _ids(_pipe(seed=3, num_epochs=1, drop_remainder=False))
    assert sorted(one) == list(range(37)) and one != list(range(37))
    assert one == _ids(_pipe(seed=3, num_epochs=1, drop_remainder=False))
    assert one != _ids(_pipe(seed=4, num_epochs=1, drop_remainder=False))
    unshuffled = _ids(_pipe(shuffle=False, num_epochs=1, drop_remainder=False))
    assert unshuffled == list(range(37))


def test_epochs_are_shuffled_differently_and_each_covers_the_data():
    ids = _ids(_pipe(seed=0, num_epochs=2, batch_size=1))
    first, second = ids[:37], ids[37:]
    assert sorted(first) == sorted(second) == list(range(37))
    assert first != second


def test_batches_drop_or_keep_the_remainder():
    sizes = [len(b["id"]) for b in _pipe(num_epochs=1, drop_remainder=True)]
    assert sizes == [4] * 9
    sizes = [len(b["id"]) for b in _pipe(num_epochs=1, drop_remainder=False)]
    assert sizes == [4] * 9 + [1]


def test_padding_keeps_tokens_and_records_lengths():
    for batch in _pipe(num_epochs=1, drop_remainder=False):
        assert batch["inputs"].shape[1] == 8
        for ids, row, length in zip(batch["id"], batch["inputs"], batch["lengths"]):
            tokens = SOURCE[int(ids)]["inputs"]
            assert length == len(tokens)
            np.testing.assert_array_equal(row[:length], tokens)
            assert not row[length:].any()


def test_packing_cuts_the_concatenated_text_into_next_token_rows():
    docs = [{"text": np.arange(1, 1 + n, dtype=np.int32) + 100 * n} for n in (5, 9, 3, 12, 7)]
    batches = list(
        pipeline.make_pipeline(
            docs,
            batch_size=2,
            pack_length=6,
            shuffle=False,
            num_epochs=1,
            prefetch=0,
            drop_remainder=False,
        )
    )
    stream = np.concatenate([d["text"] for d in docs])
    rows = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    # Each row holds 7 consecutive tokens of the stream: 6 inputs, and targets shifted by one.
    for r, (row, target) in enumerate(zip(rows, targets)):
        window = stream[7 * r : 7 * r + 7]
        np.testing.assert_array_equal(row[: len(window)], window[:6][: len(row)])
        np.testing.assert_array_equal(target[: len(window) - 1], window[1:])
    # A target is scored only when it continues the input's document.
    document = np.repeat(np.arange(len(docs)), [len(d["text"]) for d in docs])
    for r, mask in enumerate(np.concatenate([b["loss_mask"] for b in batches])):
        for j, scored in enumerate(mask):
            i = 7 * r + j
            assert scored == (i + 1 < len(stream) and document[i] == document[i + 1])


def test_host_shards_are_disjoint_and_cover_the_data():
    shards = [
        _ids(_pipe(shard_index=i, shard_count=3, num_epochs=1, drop_remainder=False, seed=2))
        for i in range(3)
    ]
    assert sorted(sum(shards, [])) == list(range(37))
    assert all(len(s) in (12, 13) for s in shards)


def test_hosts_together_read_the_batches_of_one_host():
    """Step s of two hosts with batch 2 holds the examples of step s of one host with batch 4."""
    one = iter(_pipe(seed=9, batch_size=4))
    hosts = [iter(_pipe(seed=9, batch_size=2, shard_index=i, shard_count=2)) for i in range(2)]
    for _ in range(25):  # a few epochs
        together = sorted(int(i) for host in hosts for i in next(host)["id"])
        assert together == sorted(int(i) for i in next(one)["id"])


def _take(iterator, n):
    return [next(iterator)["id"].tolist() for _ in range(n)]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resuming_from_saved_state_gives_the_same_next_batches(prefetch):
    iterator = iter(_pipe(seed=5, prefetch=prefetch))
    _take(iterator, 11)  # past the end of the first epoch
    state = iterator.get_state()
    want = _take(iterator, 12)
    resumed = iter(_pipe(seed=5, prefetch=prefetch))
    resumed.set_state(state)
    assert _take(resumed, 12) == want


def test_packed_pipeline_resumes_exactly():
    docs = [{"text": np.arange(1, 2 + n % 11, dtype=np.int32)} for n in range(40)]

    def packed():
        return pipeline.make_pipeline(docs, batch_size=3, pack_length=8, seed=4, prefetch=0)

    iterator = iter(packed())
    for _ in range(7):
        next(iterator)
    state = iterator.get_state()
    want = [next(iterator)["inputs"] for _ in range(9)]
    resumed = iter(packed())
    resumed.set_state(state)
    for batch in want:
        np.testing.assert_array_equal(next(resumed)["inputs"], batch)


def test_a_seed_does_not_replay_the_next_seed_one_epoch_later():
    second_epoch_of_seed_0 = _ids(_pipe(seed=0, num_epochs=2, batch_size=1))[37:]
    first_epoch_of_seed_1 = _ids(_pipe(seed=1, num_epochs=1, batch_size=1))
    assert second_epoch_of_seed_0 != first_epoch_of_seed_1


@pytest.mark.parametrize("prefetch", [0, 2])
def test_iterator_state_round_trips_through_orbax(tmp_path, prefetch):
    iterator = iter(_pipe(seed=1, prefetch=prefetch))
    _take(iterator, 5)
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    want = _take(iterator, 6)
    resumed = iter(_pipe(seed=1, prefetch=prefetch))
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.restore(
            5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed))
        )
    assert _take(resumed, 6) == want
