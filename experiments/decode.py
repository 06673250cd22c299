"""Per-token decoding cost at growing positions; see attention_jax/configs/decode.py."""

import os

from absl import app, flags
from ml_collections import config_flags

from attention_jax import bench
from attention_jax.bench import decode, layer_decode

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/decode.py")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/decode", "Where decode.md goes.")


def main(argv):
    del argv
    c = _CONFIG.value
    shape = bench.Shape(
        batch=c.batch,
        num_heads=c.num_heads,
        num_kv_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        dtype=c.dtype,
    )
    rows = decode.measure_decode(
        list(c.positions), shape, feature_map=c.feature_map, repeats=c.repeats
    )
    layer_rows = layer_decode.measure_layer_decode(
        list(c.layer_kinds),
        list(c.cache_lens),
        d_model=c.d_model,
        num_heads=c.num_heads,
        batch=c.batch,
        kind_params=c.layer_kind_params.to_dict(),
        repeats=c.repeats,
    )
    table = decode.markdown(rows) + "\n" + layer_decode.markdown(layer_rows)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "decode.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
