#!/usr/bin/env bash
# The accelerator checks of attention_jax, on a GPU or TPU machine with the package installed
# (pip install -e ".[dev]" and jax for the accelerator, e.g. "jax[cuda13]"):
#   1. tests_accelerator/: every vendor kernel against our XLA engine, value and gradients;
#   2. experiments.cost for the exact and sparse kinds by implementation, n = 1K..32K, bfloat16:
#      causal (flash and local with each implementation, against jax.nn with cuDNN on GPUs),
#      then the sparse kinds (bidirectional), then the state-carrying kinds (causal, to 64K);
#   3. docs/cost_<device>.md: the tables, with the device and versions they ran on.
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

# A failing check does not stop the measurements; the script exits non-zero at the end.
tests_status=0
python3 -m pytest -q -rs -p no:cacheprovider tests_accelerator 2>&1 | tee "$WORKDIR/tests.log" ||
  tests_status=$?

write_table() {
  {
    echo "# Attention cost on $DEVICE, by implementation"
    echo
    python3 -c 'import jax, sys; print(f"jax {jax.__version__}, Python {sys.version.split()[0]}, "
                f"{jax.devices()[0].device_kind}; written by experiments/scripts/accelerator_check.sh.")'
    echo "Each row's \`implementation\` column is the engine that ran it (\`kind@implementation\`"
    echo "names one; a bare kind is the automatic choice). FLOPs of a vendor kernel are those of"
    echo "the same kind in XLA, which skips the same blocks."
    for name in "$@"; do
      echo
      echo "## \`experiments/configs/cost.py:${CONFIGS[$name]}\`"
      echo
      cat "$WORKDIR/$name/costs.md"
    done
  } > "$TABLE"
}

declare -A CONFIGS=(
  [causal]="full,bf16,causal,$PLATFORM"
  [sparse]="full,bf16,sparse,$PLATFORM"
  [state]="full,bf16,state"
)
measured=()
for name in causal sparse state; do
  python3 -m experiments.cost --config="experiments/configs/cost.py:${CONFIGS[$name]}" \
    --workdir="$WORKDIR/$name"
  measured+=("$name")
  write_table "${measured[@]}"
done
echo "accelerator_check: wrote $TABLE"
if (( tests_status != 0 )); then
  echo "accelerator_check: tests_accelerator FAILED (see $WORKDIR/tests.log)" >&2
fi
exit "$tests_status"
