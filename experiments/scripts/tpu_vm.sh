#!/usr/bin/env bash
# Train one attention_jax config on a Cloud TPU VM or pod slice: every worker runs the same
# command, jax.distributed joins them, and each reads only its share of the data.
#
#   export PROJECT=my-project ZONE=us-central2-b TPU_NAME=attn ACCELERATOR=v4-32
#   export WORKDIR=gs://my-bucket/runs/mqar-performer REPO=<git URL of this repository>
#   experiments/scripts/tpu_vm.sh create
#   experiments/scripts/tpu_vm.sh setup
#   experiments/scripts/tpu_vm.sh run "experiments/configs/mqar.py:kind=performer,size=paper"
#   experiments/scripts/tpu_vm.sh delete
#
# Re-running `run` with the same WORKDIR resumes from the last checkpoint (also after a
# preemption: SIGTERM makes every worker save first). Extra arguments after the config are
# passed to experiments.train, e.g. --config.mesh.fsdp=4.
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}"
ACCELERATOR="${ACCELERATOR:-v4-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"  # v5e: v2-alpha-tpuv5-lite; v5p: v2-alpha-tpuv5
REPO="${REPO:-}"  # the git URL to clone on each worker (needed by setup)

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project "$PROJECT" --zone "$ZONE" \
    --worker=all --command "$1"
}

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --project "$PROJECT" --zone "$ZONE" \
      --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
    ;;
  setup)
    : "${REPO:?set REPO to the git URL of the attention_jax repository to install}"
    on_all_workers "set -e; [ -d attention_jax ] || git clone $REPO attention_jax; \
      cd attention_jax && git pull --ff-only && python3 -m pip install -q -U pip && \
      python3 -m pip install -q -e . 'jax[tpu]'"
    ;;
  run)
    : "${WORKDIR:?set WORKDIR (a gs:// path all workers can reach)}"
    config="${2:?give a config, e.g. experiments/configs/mqar.py:kind=dense,size=paper}"
    shift 2
    extra="$(printf '%q ' "$@")"
    on_all_workers "cd attention_jax && python3 -m experiments.train \
      --config='$config' --workdir='$WORKDIR' --config.distributed=True $extra"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --project "$PROJECT" --zone "$ZONE" --quiet
    ;;
  *)
    echo "usage: $0 create | setup | run CONFIG [ARGS...] | delete" >&2
    exit 2
    ;;
esac
