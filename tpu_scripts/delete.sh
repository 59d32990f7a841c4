#!/usr/bin/env bash
# Delete a TPU VM or the queued resource that holds it (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [--queued [--queued-resource ID]] [-- GCLOUD_ARGS...]

Delete the TPU VM NAME without a confirmation prompt (gcloud --quiet); with --queued, delete
the queued resource (default id NAME) with --force, which deletes its node too.

  --name NAME             TPU VM name (env TPU_NAME)
  --zone ZONE             e.g. us-central2-b (env TPU_ZONE)
  --project PROJECT       default: gcloud's configured project (env TPU_PROJECT)
  --queued                delete the queued resource instead of the VM
  --queued-resource ID    its id (implies --queued; default NAME)
  --dry-run               print the gcloud command, run nothing
  -h, --help              this help
Arguments after -- go to gcloud unchanged (e.g. -- --async).
EOF
}

tpu_options
queued_options
parse_args "$@"
check_tpu_options
check_queued_options

if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "$QUEUED_ID" "${GCLOUD_SCOPE[@]}" --force --quiet "${REST[@]}"
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_SCOPE[@]}" --quiet "${REST[@]}"
fi
