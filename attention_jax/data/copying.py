"""Copying and selective copying, as posed in the Mamba paper (Gu & Dao 2023, Section 4.1).

The context holds `num_tokens` data tokens: at its start (copying, a fixed delay) or scattered
among blank noise (selective copying, which needs content-based selection). After a marker the
model must emit the data tokens in order at the last `num_tokens` positions, where the inputs are
blank; loss is taken only there. Layout for seq_len L and M tokens:

    [ context: L - M - 1 positions ] [MARKER] [BLANK x M]      targets: data tokens at the last M
"""

import dataclasses
import functools

import numpy as np

from attention_jax.data import builder

# Token 0 is left for padding and never generated.
BLANK, MARKER = 1, 2
FIRST_DATA_TOKEN = 3


def check_copying_params(seq_len: int, num_tokens: int, vocab_size: int) -> None:
    """Raises ValueError for parameters no copying example can satisfy."""
    if num_tokens < 1 or 2 * num_tokens + 1 > seq_len:
        raise ValueError(
            f"copying: need 1 <= num_tokens and 2 * num_tokens + 1 <= seq_len (the tokens, the "
            f"marker and the answer slots), got num_tokens={num_tokens}, seq_len={seq_len}."
        )
    if vocab_size <= FIRST_DATA_TOKEN:
        raise ValueError(
            f"copying: vocab_size={vocab_size} leaves no data tokens (0 pad, 1 blank, 2 marker "
            f"are reserved); use vocab_size >= {FIRST_DATA_TOKEN + 1}."
        )


def copying_example(
    rng: np.random.Generator, *, seq_len: int, num_tokens: int, vocab_size: int, selective: bool
) -> dict[str, np.ndarray]:
    """One example: `inputs`, `targets` (the data tokens at the end), `loss_mask`, all [L]."""
    check_copying_params(seq_len, num_tokens, vocab_size)
    context = seq_len - num_tokens - 1
    data = rng.integers(FIRST_DATA_TOKEN, vocab_size, size=num_tokens)
    if selective:
        positions = np.sort(rng.choice(context, size=num_tokens, replace=False))
    else:
        positions = np.arange(num_tokens)
    inputs = np.full(seq_len, BLANK, np.int32)
    inputs[positions] = data
    inputs[context] = MARKER
    targets = np.zeros(seq_len, np.int32)
    targets[-num_tokens:] = data
    loss_mask = np.zeros(seq_len, bool)
    loss_mask[-num_tokens:] = True
    return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}


@dataclasses.dataclass(eq=False)
class CopyingConfig(builder.TaskConfig):
    seq_len: int = 128
    num_tokens: int = 8
    vocab_size: int = 16


# The Mamba paper's selective-copying size: 16 tokens to copy from 4096 positions, vocabulary 16.
COPYING_CONFIGS = [
    CopyingConfig(name="mamba", seq_len=4096, num_tokens=16, vocab_size=16, num_train=20_000),
    CopyingConfig(name="small"),
]


class _CopyingBuilder(builder.TaskBuilder, skip_registration=True):
    SELECTIVE = False
    BUILDER_CONFIGS = COPYING_CONFIGS
    DEFAULT_BUILDER_CONFIG_NAME = "small"
    DESCRIPTION = __doc__
    check_params = staticmethod(check_copying_params)
    CITATION = "Gu and Dao. Mamba: Linear-Time Sequence Modeling with Selective State Spaces. 2023."

    def features(self):
        return builder.lm_features(self.builder_config.seq_len)

    def example_fn(self):
        params = self.builder_config.task_params()
        return functools.partial(copying_example, **params, selective=self.SELECTIVE)


class Copying(_CopyingBuilder):
    """Copying: the data tokens open the sequence; emit them after a fixed delay."""


class SelectiveCopying(_CopyingBuilder):
    """Selective copying: the data tokens are scattered among blanks; emit them in order."""

    SELECTIVE = True
