#!/usr/bin/env bash
# The accelerator checks of attention_jax, on a GPU or TPU machine with the package installed
# (pip install -e ".[dev]" and jax for the accelerator, e.g. "jax[cuda13]"):
#   1. tests_accelerator/: every vendor kernel against our XLA engine, value and gradients;
#   2. experiments.cost for the exact and sparse kinds by implementation, n = 1K..32K, bfloat16:
#      causal (flash and local with each implementation, against jax.nn with cuDNN on GPUs),
#      then the sparse kinds (bidirectional);
#   3. docs/cost_<device>.md: both tables, with the device and versions they ran on.
#
#   experiments/scripts/accelerator_check.sh [workdir]      # default workdir/accelerator
#
# Each step's output is kept in the workdir; the table is rewritten after each comparison, so
# a run cut short keeps what it measured.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKDIR="${1:-workdir/accelerator}"
PLATFORM=$(python3 -c 'import jax; print(jax.default_backend())')
if [[ "$PLATFORM" == cpu ]]; then
  echo "accelerator_check: jax sees no GPU or TPU here; nothing to check." >&2
  exit 1
fi
DEVICE=$(python3 -c 'import jax; print(jax.devices()[0].device_kind.lower().replace(" ", "_"))')
TABLE="docs/cost_${DEVICE}.md"
mkdir -p "$WORKDIR" docs

python3 -m pytest -q -rs -p no:cacheprovider tests_accelerator 2>&1 | tee "$WORKDIR/tests.log"

write_table() {
  {
    echo "# Attention cost on $DEVICE, by implementation"
    echo
    python3 -c 'import jax, sys; print(f"jax {jax.__version__}, Python {sys.version.split()[0]}, "
                f"{jax.devices()[0].device_kind}; written by experiments/scripts/accelerator_check.sh.")'
    echo "Each row's \`implementation\` column is the engine that ran it (\`kind@implementation\`"
    echo "names one; a bare kind is the automatic choice). FLOPs of a vendor kernel are those of"
    echo "the same kind in XLA, which skips the same blocks."
    for options in "$@"; do
      if [[ -f "$WORKDIR/$options/costs.md" ]]; then
        echo
        echo "## \`experiments/configs/cost.py:full,bf16,$options,$PLATFORM\`"
        echo
        cat "$WORKDIR/$options/costs.md"
      fi
    done
  } > "$TABLE"
}

done_options=()
for options in causal sparse; do
  python3 -m experiments.cost --config="experiments/configs/cost.py:full,bf16,$options,$PLATFORM" \
    --workdir="$WORKDIR/$options"
  done_options+=("$options")
  write_table "${done_options[@]}"
done
echo "accelerator_check: wrote $TABLE"
