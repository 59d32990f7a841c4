#!/usr/bin/env bash
# Create a Cloud TPU VM, or a queued resource that holds one (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE --accelerator-type TYPE [options] [-- GCLOUD_ARGS...]

Create a TPU VM (gcloud compute tpus tpu-vm create) or, with --queued, a queued resource
(gcloud compute tpus queued-resources create) whose node is NAME.

$(help_tpu)
  --accelerator-type TYPE e.g. v4-32, v5litepod-64, v5p-128, v6e-256 (env TPU_ACCELERATOR_TYPE)
  --version VERSION       TPU runtime (env TPU_VERSION); default by generation:
                          v2/v3/v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
                          v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
$(help_queued "create a queued resource instead of the VM directly")
  --spot                  spot capacity (preemptible)
  --best-effort           best-effort tier (queued only; uses gcloud alpha)
  --reserved              use the project's reservation
$(help_common)
Arguments after -- go to gcloud unchanged (e.g. -- --network=my-net --labels=team=lm).
EOF
}

# The runtime image that supports a given TPU generation.
default_version() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default --version for accelerator type '$1'; give --version" ;;
  esac
}

tpu_options
ACCELERATOR_TYPE=${TPU_ACCELERATOR_TYPE:-}
VERSION=${TPU_VERSION:-}
queued_options
SPOT=0 BEST_EFFORT=0 RESERVED=0
option --accelerator-type ACCELERATOR_TYPE
option --version VERSION
flag --spot SPOT
flag --best-effort BEST_EFFORT
flag --reserved RESERVED
parse_args "$@"

require "$ACCELERATOR_TYPE" --accelerator-type "or set TPU_ACCELERATOR_TYPE, e.g. v4-32 or v5litepod-64"
check_match "$ACCELERATOR_TYPE" '^v[0-9]+[a-z]*-[0-9]+$' --accelerator-type \
  "an accelerator type like v4-32 or v5litepod-64"
[[ -n $VERSION ]] || VERSION=$(default_version "$ACCELERATOR_TYPE")
check_match "$VERSION" '^[a-z0-9][-a-z0-9.]*$' --version "a TPU runtime version like tpu-ubuntu2204-base"
((SPOT + BEST_EFFORT + RESERVED <= 1)) || die "--spot, --best-effort and --reserved exclude each other"
((QUEUED || !BEST_EFFORT)) || die "--best-effort needs --queued (only queued resources have that tier)"

PROVISIONING=()
((SPOT)) && PROVISIONING+=(--spot)
((BEST_EFFORT)) && PROVISIONING+=(--best-effort)
((RESERVED)) && PROVISIONING+=(--reserved)

if ((QUEUED)); then
  GCLOUD=(gcloud)
  ((BEST_EFFORT)) && GCLOUD+=(alpha)
  run "${GCLOUD[@]}" compute tpus queued-resources create "$QUEUED_ID" "${GCLOUD_SCOPE[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$VERSION" \
    "${PROVISIONING[@]}" "${REST[@]}"
else
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_SCOPE[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$VERSION" "${PROVISIONING[@]}" "${REST[@]}"
fi
