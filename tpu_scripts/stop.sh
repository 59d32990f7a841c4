#!/usr/bin/env bash
# Signal the command that launch.sh started on every worker of a TPU VM (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [--signal TERM|INT|KILL] [options]

Send a signal to the process whose pid launch.sh wrote on each worker
(LOG_DIR/LOG_NAME.<hostname>.pid in the repository). TERM, the default, makes the trainer
finish its checkpoint save, write a final checkpoint and exit 0; launch.sh again resumes.

$(help_tpu)
  --signal SIG            TERM (default), INT or KILL
$(help_launched)
$(help_common)
EOF
}

tpu_options
launched_options
SIGNAL=TERM
option --signal SIGNAL
parse_args "$@"
check_choice "$SIGNAL" --signal TERM INT KILL
check_no_rest

log=$(remote_log_path)
tpu_ssh all "cd $(quote "$REMOTE_REPO") && kill -$SIGNAL \"\$(cat ${log%.log}.pid)\" && \
echo \"\$(hostname): sent SIG$SIGNAL\""
