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

  --name NAME         TPU VM name (env TPU_NAME)
  --zone ZONE         e.g. us-central2-b (env TPU_ZONE)
  --project PROJECT   default: gcloud's configured project (env TPU_PROJECT)
  --signal SIG        TERM (default), INT or KILL
  --repo-dir DIR      as given to launch.sh (default: lowrank_jax; env TPU_REPO_DIR)
  --log-dir DIR       as given to launch.sh (default: logs)
  --log-name NAME     as given to launch.sh (default: train)
  --dry-run           print the gcloud command, run nothing
  -h, --help          this help
EOF
}

tpu_options
repo_option
log_options
SIGNAL=TERM
option --signal SIGNAL
parse_args "$@"
check_tpu_options
check_remote_options
check_log_options
check_choice "$SIGNAL" --signal TERM INT KILL
check_no_rest

log=$(remote_log_path)
tpu_ssh all "cd $(printf %q "$REMOTE_REPO") && kill -$SIGNAL \"\$(cat ${log%.log}.pid)\" && \
echo \"\$(hostname): sent SIG$SIGNAL\""
