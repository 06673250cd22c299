"""Times an exact kind (default dense) against jax.nn.dot_product_attention, fwd and fwd+bwd.

python -m experiments.dense_baseline --repeats=5
python -m experiments.dense_baseline --dtype=bfloat16 --case=0 --case=6
"""

import dataclasses

from absl import app, flags

from attention_jax.bench import dense_baseline

_KIND = flags.DEFINE_string("kind", "dense", "Registered kind to compare with jax.nn.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per program (median is reported).")
_CASES = flags.DEFINE_multi_integer("case", None, "Indices into the grid to run (default all).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Input dtype.")
flags.FLAGS.set_default("verbosity", -1)


def main(argv):
    del argv
    grid = dense_baseline.GRID
    cases = grid if _CASES.value is None else [grid[i] for i in _CASES.value]
    rows = []
    for case in cases:
        case = dataclasses.replace(case, dtype=_DTYPE.value)
        rows.append(dense_baseline.compare_case(case, _KIND.value, repeats=_REPEATS.value))
        print(dense_baseline.format_table(rows[-1:], _KIND.value).splitlines()[-1], flush=True)
    print(dense_baseline.format_table(rows, _KIND.value))


if __name__ == "__main__":
    app.run(main)
