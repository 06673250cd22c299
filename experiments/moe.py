"""MoE feed-forward cost against a dense FFN at equal active parameters, and routed attention
(SwitchHead) with 4 and 16 experts at top-2 beside multi-head attention.

python -m experiments.moe --tokens=4096
"""

from absl import app, flags

from attention_jax.bench import moe

_TOKENS = flags.DEFINE_integer("tokens", 4096, "Tokens per forward + backward pass.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats after compilation (median).")


def main(argv):
    del argv
    print(moe.markdown(moe.measure_moe(tokens=_TOKENS.value, repeats=_REPEATS.value)))
    print(
        moe.switchhead_markdown(
            moe.measure_switchhead(tokens=_TOKENS.value // 2, repeats=_REPEATS.value)
        )
    )


if __name__ == "__main__":
    app.run(main)
