"""Task data: generated tasks as TFDS datasets, real TFDS datasets, grain pipelines."""

from attention_jax.data.chars import Chars, decode_tokens, encode_bytes
from attention_jax.data.copying import Copying, SelectiveCopying, copying_example
from attention_jax.data.generation import majority_class_rate, unique_splits
from attention_jax.data.induction import InductionHeads, induction_example
from attention_jax.data.listops import Listops, detokenize, listops_example
from attention_jax.data.mqar import Mqar, mqar_example
from attention_jax.data.pipeline import make_pipeline
from attention_jax.data.tasks import GENERATED, REAL, Task, generated_builder, get_task

__all__ = [
    "GENERATED",
    "REAL",
    "Chars",
    "Copying",
    "InductionHeads",
    "Listops",
    "Mqar",
    "SelectiveCopying",
    "Task",
    "copying_example",
    "decode_tokens",
    "detokenize",
    "encode_bytes",
    "generated_builder",
    "get_task",
    "induction_example",
    "listops_example",
    "majority_class_rate",
    "make_pipeline",
    "mqar_example",
    "unique_splits",
]
