"""Induction heads, as posed in H3 (Fu et al. 2023) and the Mamba paper (Gu & Dao 2023).

A trigger token appears once at a random place, followed by a random token x; the sequence ends
with the trigger again and the model must answer x. Everything else is uniform random data, and
the trigger never appears elsewhere. Loss is taken only at the last position.
"""

import dataclasses
import functools

import numpy as np

from attention_jax.data import builder

# Token 0 is left for padding and never generated.
TRIGGER = 1
FIRST_DATA_TOKEN = 2


def check_induction_params(seq_len: int, vocab_size: int) -> None:
    """Raises ValueError for parameters no induction-heads example can satisfy."""
    if seq_len < 3:
        raise ValueError(
            f"induction_heads: seq_len must be >= 3 (trigger, answer, trigger), got {seq_len}."
        )
    if vocab_size <= FIRST_DATA_TOKEN:
        raise ValueError(
            f"induction_heads: vocab_size={vocab_size} leaves no data tokens (0 pad and 1 "
            f"trigger are reserved); use vocab_size >= {FIRST_DATA_TOKEN + 1}."
        )


def induction_example(
    rng: np.random.Generator, *, seq_len: int, vocab_size: int
) -> dict[str, np.ndarray]:
    """One example: `inputs`, `targets` (the answer at the last position), `loss_mask`, all [L]."""
    check_induction_params(seq_len, vocab_size)
    inputs = rng.integers(FIRST_DATA_TOKEN, vocab_size, size=seq_len).astype(np.int32)
    first = rng.integers(seq_len - 2)  # leaves room for the answer before the final trigger
    inputs[first] = TRIGGER
    inputs[-1] = TRIGGER
    targets = np.zeros(seq_len, np.int32)
    targets[-1] = inputs[first + 1]
    loss_mask = np.zeros(seq_len, bool)
    loss_mask[-1] = True
    return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}


@dataclasses.dataclass(eq=False)
class InductionConfig(builder.TaskConfig):
    seq_len: int = 64
    vocab_size: int = 16


class InductionHeads(builder.TaskBuilder):
    """Induction heads: after `trigger x ... trigger`, answer x."""

    # The Mamba paper trains at length 256 with vocabulary 16.
    BUILDER_CONFIGS = [
        InductionConfig(name="mamba", seq_len=256, vocab_size=16, num_train=100_000),
        InductionConfig(name="small"),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "small"
    DESCRIPTION = __doc__
    check_params = staticmethod(check_induction_params)
    CITATION = (
        "Fu et al. Hungry Hungry Hippos: Towards Language Modeling with State Space Models. 2023."
    )

    def features(self):
        return builder.lm_features(self.builder_config.seq_len)

    def example_fn(self):
        params = self.builder_config.task_params()
        return functools.partial(induction_example, **params)
