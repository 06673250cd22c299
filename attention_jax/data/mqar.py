"""Multi-query associative recall (MQAR) as defined in Zoology (Arora et al. 2023, 2312.04927).

The context lists key-value pairs `k1 v1 k2 v2 ...`; the query region then asks for every key
again, at power-law distributed gaps, and the model must answer with the paired value. Keys come
from the first half of the vocabulary (never 0), values from the second half. Loss is taken only
at the query positions.

The query region's other positions are fillers. With `random_fillers=True` (our default, and
Zoology's library default `random_non_queries=True`) they are uniform random tokens, which may
repeat a key. With `random_fillers=False` every filler is token 0, as in the configs behind
Zoology's Figure 2 (`random_non_queries=False`): a quieter task whose numbers compare with the
paper's. Token 0 is never a key (keys are 1 .. vocab_size // 2 - 1) nor a value, so a zero filler
cannot be mistaken for a query.
"""

import dataclasses
import functools

import numpy as np

from attention_jax.data import builder

# Zoology's default: gaps between a pair and its query follow p(g) ~ g^(a - 1), mostly short.
POWER_A = 0.01


def check_mqar_params(
    seq_len: int, num_kv_pairs: int, vocab_size: int, random_fillers: bool = True
) -> None:
    """Raises ValueError for parameters no MQAR example can satisfy."""
    if not isinstance(random_fillers, bool | np.bool_):
        raise ValueError(
            f"mqar: random_fillers must be True (uniform random fillers) or False (token 0, as in "
            f"Zoology's paper configs), got {random_fillers!r}."
        )
    if seq_len % 2:
        raise ValueError(
            f"mqar: seq_len must be even (queries sit on even offsets), got {seq_len}."
        )
    if num_kv_pairs < 1 or 4 * num_kv_pairs > seq_len:
        raise ValueError(
            f"mqar: need 1 <= num_kv_pairs and 4 * num_kv_pairs <= seq_len (the pairs take "
            f"2 * num_kv_pairs positions and each query two more), got num_kv_pairs="
            f"{num_kv_pairs}, seq_len={seq_len}. Lower num_kv_pairs or raise seq_len."
        )
    num_keys = vocab_size // 2 - 1
    if num_keys < num_kv_pairs:
        raise ValueError(
            f"mqar: vocab_size={vocab_size} gives only {max(num_keys, 0)} distinct keys "
            f"(1 .. vocab_size // 2 - 1) for {num_kv_pairs} pairs; use vocab_size >= "
            f"{2 * num_kv_pairs + 2}."
        )


def mqar_gap_probabilities(seq_len: int, num_kv_pairs: int, power_a: float = POWER_A) -> np.ndarray:
    """p(gap) over the query slots, the power law Zoology samples query positions from."""
    slots = (seq_len - 2 * num_kv_pairs) // 2
    p = power_a * np.arange(1, slots + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def mqar_example(
    rng: np.random.Generator,
    *,
    seq_len: int,
    num_kv_pairs: int,
    vocab_size: int,
    random_fillers: bool = True,
    gap_probabilities: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One example: `inputs`, `targets` (the value at each query, else 0), `loss_mask`, all [L].

    `random_fillers=False` puts token 0 at every position that is neither a context pair nor a
    query (Zoology's `random_non_queries=False`). Pass `gap_probabilities` (from
    `mqar_gap_probabilities`) when drawing many examples.
    """
    check_mqar_params(seq_len, num_kv_pairs, vocab_size, random_fillers)
    if gap_probabilities is None:
        gap_probabilities = mqar_gap_probabilities(seq_len, num_kv_pairs)
    half = vocab_size // 2
    keys = rng.choice(np.arange(1, half), size=num_kv_pairs, replace=False)
    values = rng.choice(np.arange(half, vocab_size), size=num_kv_pairs, replace=False)
    context = 2 * num_kv_pairs
    # Query i sits gaps[i] slots into the query region; each slot is two tokens wide.
    gaps = rng.choice(len(gap_probabilities), size=num_kv_pairs, replace=False, p=gap_probabilities)
    query_positions = context + 2 * gaps

    if random_fillers:
        inputs = rng.integers(0, vocab_size, size=seq_len)
    else:
        inputs = np.zeros(seq_len, np.int64)
    inputs[0:context:2] = keys
    inputs[1:context:2] = values
    inputs[query_positions] = keys
    targets = np.zeros(seq_len, np.int64)
    targets[query_positions] = values
    loss_mask = np.zeros(seq_len, bool)
    loss_mask[query_positions] = True
    return {
        "inputs": inputs.astype(np.int32),
        "targets": targets.astype(np.int32),
        "loss_mask": loss_mask,
    }


@dataclasses.dataclass(eq=False)
class MqarConfig(builder.TaskConfig):
    seq_len: int = 128
    num_kv_pairs: int = 8
    vocab_size: int = 8192
    random_fillers: bool = True


# Zoology's Figure 2 sizes with its vocabulary and split sizes, and CPU-small versions of each.
# The small vocabulary (127 keys) still holds 64 distinct pairs, though unlike Zoology it is
# smaller than the longest sequence, so random fillers repeat keys more often at length 512
# (about 80 fillers equal a context key at (512, 64)); `random_fillers=False` has none.
PAPER_SIZES = ((64, 4), (128, 8), (256, 16), (512, 64))
SMALL_VOCAB = 256


class Mqar(builder.TaskBuilder):
    """MQAR (Zoology): key-value pairs, then every key queried again; loss at the queries."""

    BUILDER_CONFIGS = [
        *(
            MqarConfig(
                name=f"s{seq_len}_kv{kv}",
                seq_len=seq_len,
                num_kv_pairs=kv,
                vocab_size=8192,
                num_train=100_000,
                num_validation=3_000,
                num_test=3_000,
            )
            for seq_len, kv in PAPER_SIZES
        ),
        *(
            MqarConfig(
                name=f"small_s{seq_len}_kv{kv}",
                seq_len=seq_len,
                num_kv_pairs=kv,
                vocab_size=SMALL_VOCAB,
            )
            for seq_len, kv in PAPER_SIZES
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "small_s128_kv8"
    DESCRIPTION = __doc__
    check_params = staticmethod(check_mqar_params)
    CITATION = (
        "Arora, Eyuboglu et al. Zoology: Measuring and Improving Recall in Efficient Language "
        "Models. 2023."
    )

    def features(self):
        return builder.lm_features(self.builder_config.seq_len)

    def example_fn(self):
        params = self.builder_config.task_params()
        gaps = mqar_gap_probabilities(params["seq_len"], params["num_kv_pairs"])
        return functools.partial(mqar_example, **params, gap_probabilities=gaps)
