#!/usr/bin/env bash
# Train one config on every GPU of one machine: one process sees all GPUs, the mesh splits the
# batch over them (data parallel), or shards parameters too with --config.mesh.fsdp=N.
#
#   python3 -m pip install -e . "jax[cuda12]"
#   experiments/scripts/multi_gpu.sh "experiments/configs/listops.py:kind=flash,size=paper" \
#       workdir/listops-flash --config.mesh.fsdp=2
set -euo pipefail
config="${1:?give a config, e.g. experiments/configs/listops.py:kind=dense,size=paper}"
workdir="${2:?give a workdir}"
shift 2
nvidia-smi --query-gpu=index,name,memory.total --format=csv
exec python3 -m experiments.train --config="$config" --workdir="$workdir" "$@"
