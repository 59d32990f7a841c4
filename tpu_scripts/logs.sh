#!/usr/bin/env bash
# Follow the training logs that launch.sh started on a TPU VM's workers (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [--worker 0|all|0,3] [options]

tail -F the log that launch.sh writes on each worker (LOG_DIR/LOG_NAME.<hostname>.log in the
repository). Worker 0 by default; with several workers each line starts with [hostname].
Ctrl-C stops following; the training keeps running.

$(help_tpu)
  --worker W              0 (default), all, or a list like 0,3
  --lines N               lines of history to show first (default: 100)
  --no-follow             print the last lines and return
$(help_launched)
$(help_common)
EOF
}

tpu_options
launched_options
WORKER=0 LINES=100 NO_FOLLOW=0
option --worker WORKER
option --lines LINES
flag --no-follow NO_FOLLOW
parse_args "$@"
check_worker "$WORKER"
check_match "$LINES" '^[0-9]+$' --lines "a number of lines"
check_no_rest

tail=(tail -n "$LINES")
((NO_FOLLOW)) || tail+=(-F)
script="cd $(quote "$REMOTE_REPO") && $(quote "${tail[@]}") $(remote_log_path)"
if [[ ! $WORKER =~ ^[0-9]+$ ]]; then
  # shellcheck disable=SC2016  # $(hostname) is meant for the worker's shell
  script+=' | sed -u "s/^/[$(hostname)] /"'
fi
tpu_ssh "$WORKER" "$script"
