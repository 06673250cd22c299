"""Cost of the state-carrying ops against causal jax.nn as n grows (bench/state_ops.py).

python -m experiments.state_ops_cost --kinds=retnet,gla --lengths=1024,4096,16384
"""

from absl import app, flags

from attention_jax.bench import state_ops

_KINDS = flags.DEFINE_list("kinds", list(state_ops.KINDS), "Ops to time (and jax.nn).")
_LENGTHS = flags.DEFINE_list("lengths", ["1024", "2048", "4096", "8192", "16384"], "Values of n.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median).")


def main(argv):
    del argv
    rows = state_ops.measure(_KINDS.value, [int(n) for n in _LENGTHS.value], repeats=_REPEATS.value)
    print(state_ops.markdown(rows))


if __name__ == "__main__":
    app.run(main)
