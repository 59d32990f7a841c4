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

$(help_tpu)
$(help_queued "delete the queued resource instead of the VM")
$(help_common)
Arguments after -- go to gcloud unchanged (e.g. -- --async).
EOF
}

tpu_options
queued_options
parse_args "$@"

if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "$QUEUED_ID" "${GCLOUD_SCOPE[@]}" --force --quiet "${REST[@]}"
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_SCOPE[@]}" --quiet "${REST[@]}"
fi
