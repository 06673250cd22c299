"""Drawing a task's splits from one seeded stream, with every example distinct across splits."""

import hashlib
from collections.abc import Callable, Mapping

import numpy as np
import tqdm

Example = dict[str, np.ndarray]
# Draws in a row that repeat an earlier example before we conclude the task is too small.
MAX_REPEATS_IN_A_ROW = 1000


def example_digest(example: Example, key: str = "inputs") -> bytes:
    """A fingerprint of the model's input, which decides whether two examples are the same."""
    return hashlib.blake2b(np.ascontiguousarray(example[key]).tobytes(), digest_size=16).digest()


def check_split_sizes(sizes: Mapping[str, int], description: str) -> None:
    """Raises ValueError for a negative split size."""
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"{description}: split sizes must be >= 0, got {dict(sizes)}.")


def unique_splits(
    draw: Callable[[np.random.Generator], Example],
    seed: int,
    sizes: Mapping[str, int],
    *,
    description: str = "examples",
) -> dict[str, list[Example]]:
    """Draws `sizes[split]` examples per split, in order, from one stream seeded by `seed`.

    An example whose inputs were already drawn is skipped, so no example is in two splits (or
    twice in one): the LRA ListOps recipe. Same seed and sizes give the same splits; a split's
    content depends only on the seed and the sizes of the splits listed before it.
    """
    check_split_sizes(sizes, description)
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    splits: dict[str, list[Example]] = {}
    with tqdm.tqdm(
        total=sum(sizes.values()), desc=f"Drawing {description}", unit="ex", leave=False
    ) as bar:
        for split, size in sizes.items():
            examples = splits[split] = []
            repeats = 0
            while len(examples) < size:
                example = draw(rng)
                digest = example_digest(example)
                if digest in seen:
                    repeats += 1
                    if repeats >= MAX_REPEATS_IN_A_ROW:
                        raise ValueError(
                            f"{description}: only {len(seen)} distinct examples found after "
                            f"{MAX_REPEATS_IN_A_ROW} repeats in a row, but {sum(sizes.values())} "
                            f"were asked for; lower the split sizes or enlarge the task "
                            f"(longer sequences, larger vocabulary)."
                        )
                    continue
                repeats = 0
                seen.add(digest)
                examples.append(example)
                bar.update()
    return splits


def majority_class_rate(labels: np.ndarray) -> float:
    """The accuracy of always predicting the most frequent label: the floor accuracy must beat."""
    labels = np.asarray(labels).ravel()
    if labels.size == 0:
        raise ValueError("majority_class_rate: no labels given.")
    return float(np.bincount(labels).max() / labels.size)
