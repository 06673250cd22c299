"""ListOps, the Long Range Arena version (Tay et al. 2020, after Nangia & Bowman 2018).

An example is one nested expression such as `[MAX 2 9 [MIN 4 7 ] 0 ]` and its value (0-9) is the
label. Trees are grown exactly as LRA's generator grows them: below `max_depth` a node is an
operator with probability 1/4, with 2 to `max_args` arguments; trees are drawn until their token
count lies in [min_length, max_length].

Two tokenizations of the same trees (`tokenization=`):
- "explicit" (default): every operator and every `]` is a token, so the structure is recoverable.
- "lra": what LRA's models saw. Its input pipeline split the text with TFDS's `Tokenizer`, which
  keeps only alphanumeric runs: `[MAX` becomes the one token `MAX`, and `]` (like the `(` `)` of
  its text format) disappears. The sequence holds only operators and digits, and where an
  operator's arguments end is no longer marked: a harder, structurally ambiguous task.

In both, min_length and max_length bound the explicit token count (operators, digits and `]`),
the length LRA's generator filtered on, so both draw LRA's distribution of trees and an "lra"
sequence is shorter than its explicit form by its number of operators. It never exceeds
max_length, the length both are padded to (LRA padded to its max_length too). The vocabulary is
the same (id 15, `]`, is unused under "lra"), and so are the labels. One seed gives the same trees
under both, save that under "lra" a tree that tokenizes like an earlier one is skipped, so that no
input is in two splits (LRA kept distinct trees, so it could hold such twins).
"""

import dataclasses
import functools
import random

import numpy as np
import tensorflow_datasets as tfds

from attention_jax.data import builder

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
# 0 is padding; digit d is token d + 1; then the operators and the closing bracket.
VOCAB = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, CLOSE)
TOKEN = {name: i for i, name in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10
TOKENIZATIONS = ("explicit", "lra")
OPERATOR_P = 0.25  # LRA's VALUE_P: the chance a node below max_depth is an operator.
# Draws per example before giving up: lengths that are possible but vanishingly rare.
MAX_TRIES = 100_000


def check_listops_params(
    max_depth: int,
    max_args: int,
    min_length: int,
    max_length: int,
    tokenization: str = "explicit",
) -> None:
    """Raises ValueError for grammar limits no expression can meet, or an unknown tokenization."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(
            f"listops: tokenization must be one of {TOKENIZATIONS} ('explicit' keeps every ']', "
            f"'lra' drops them as LRA's tokenizer did), got {tokenization!r}."
        )
    if max_depth < 1 or max_args < 2:
        raise ValueError(
            f"listops: need max_depth >= 1 and max_args >= 2, got {max_depth} and {max_args}."
        )
    if not 1 <= min_length <= max_length:
        raise ValueError(
            f"listops: need 1 <= min_length <= max_length, got min_length={min_length}, "
            f"max_length={max_length}."
        )
    longest = 1  # the longest expression: every operator at full arity down to max_depth
    for _ in range(max_depth - 1):
        longest = 2 + max_args * longest
    if longest < min_length:
        raise ValueError(
            f"listops: with max_depth={max_depth} and max_args={max_args} the longest expression "
            f"has {longest} tokens, fewer than min_length={min_length}; lower min_length or "
            f"raise max_depth / max_args."
        )


def _operate(operator: str, args: list[int]) -> int:
    if operator == "[MIN":
        return min(args)
    if operator == "[MAX":
        return max(args)
    if operator == "[MED":
        return int(np.median(args))  # LRA's definition: an even count truncates the mean.
    return sum(args) % 10


class _TooLong(Exception):
    """A tree passed max_length while growing; it would be rejected anyway."""


def _grow(rng: random.Random, depth: int, limits: tuple[int, int, int], out: list[int]) -> int:
    """Appends one subtree's tokens to `out` and returns its value."""
    max_depth, max_args, max_length = limits
    if len(out) >= max_length:
        raise _TooLong
    if depth < max_depth and rng.random() < OPERATOR_P:
        operator = rng.choice(OPERATORS)
        out.append(TOKEN[operator])
        num_args = rng.randint(2, max_args)
        args = [_grow(rng, depth + 1, limits, out) for _ in range(num_args)]
        out.append(TOKEN[CLOSE])
        return _operate(operator, args)
    digit = rng.randrange(10)
    out.append(TOKEN[str(digit)])
    return digit


def listops_example(
    rng: np.random.Generator,
    *,
    max_depth: int,
    max_args: int,
    min_length: int,
    max_length: int,
    tokenization: str = "explicit",
) -> dict[str, np.ndarray]:
    """One example: `inputs` [n] tokens, `label` in 0..9.

    The expression's explicit form has min_length to max_length tokens; that form is `inputs`
    under tokenization "explicit", and under "lra" `inputs` is it without its `]` tokens. The
    same generator state gives the same tree under either tokenization.
    """
    check_listops_params(max_depth, max_args, min_length, max_length, tokenization)
    limits = (max_depth, max_args, max_length)
    # Most draws are rejected; Python's own generator makes the many scalar draws ~10x cheaper.
    tree_rng = random.Random(int(rng.integers(2**63)))
    for _ in range(MAX_TRIES):
        tokens: list[int] = []
        try:
            value = _grow(tree_rng, 1, limits, tokens)
        except _TooLong:
            continue
        if min_length <= len(tokens) <= max_length:
            if tokenization == "lra":
                tokens = [t for t in tokens if t != TOKEN[CLOSE]]
            return {"inputs": np.asarray(tokens, np.int32), "label": np.int32(value)}
    raise ValueError(
        f"listops: no expression with {min_length} to {max_length} tokens in {MAX_TRIES} draws "
        f"(max_depth={max_depth}, max_args={max_args}); widen the length range."
    )


def detokenize(tokens: np.ndarray) -> str:
    """Token ids back to the readable expression, padding dropped."""
    return " ".join(VOCAB[t] for t in np.asarray(tokens) if t)


@dataclasses.dataclass(eq=False)
class ListopsConfig(builder.TaskConfig):
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 32
    max_length: int = 256
    tokenization: str = "explicit"


class Listops(builder.TaskBuilder):
    """ListOps (LRA): nested MIN/MAX/MED/SM expressions over digits; the label is the value."""

    BUILDER_CONFIGS = [
        # LRA's sizes (its lengths were exclusive bounds; these are inclusive).
        ListopsConfig(
            name="lra",
            min_length=500,
            max_length=2000,
            num_train=96_000,
            num_validation=2_000,
            num_test=2_000,
        ),
        ListopsConfig(name="small"),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "small"
    DESCRIPTION = __doc__
    check_params = staticmethod(check_listops_params)
    CITATION = "Tay et al. Long Range Arena: A Benchmark for Efficient Transformers. ICLR 2021."

    def features(self):
        return tfds.features.FeaturesDict(
            {
                "inputs": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "label": tfds.features.Tensor(shape=(), dtype=np.int32),
            }
        )

    def example_fn(self):
        params = self.builder_config.task_params()
        return functools.partial(listops_example, **params)
