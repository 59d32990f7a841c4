#!/usr/bin/env bash
# Start the same command on every worker of a TPU VM, in the background (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [options] -- COMMAND [ARGS...]

On every worker at once: put the virtual environment first on PATH, cd into the repository
and start COMMAND with nohup in the background, its output in LOG_DIR/LOG_NAME.<hostname>.log
(relative to the repository) and its pid next to it in .pid (stop.sh signals it); a worker
where that pid is still alive refuses (exit 1). COMMAND is passed through word for word
(quoting kept). Give the trainer distributed.auto=true: JAX then finds the other workers of
the pod slice itself (no coordinator address needed), and run_dir on a file system that every
worker sees (an NFS share, or a bucket mounted with gcsfuse at the same path).

$(help_tpu)
$(help_repo "the repository on the workers")
$(help_venv)
$(help_log "where the logs go, in the repository" "their name: NAME.<hostname>.log")
$(help_common)

Example:
  $PROG --name my-tpu --zone us-central2-b -- lowrank-jax train \\
      --config experiments/configs/llama_1b.yaml distributed.auto=true run_dir=/mnt/shared/llama_1b
EOF
}

tpu_options
repo_option
venv_option
log_options
parse_args "$@"
check_command

log=$(remote_log_path)
pid=${log%.log}.pid
venv=$(remote_home_path "$REMOTE_VENV")
tpu_ssh all "set -euo pipefail; \
export VIRTUAL_ENV=$venv PATH=$venv/bin:\"\$PATH\"; \
cd $(quote "$REMOTE_REPO"); \
mkdir -p $(quote "$LOG_DIR"); \
if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then \
echo \"\$(hostname): pid \$(cat $pid) of an earlier launch is still running (stop.sh)\" >&2; exit 1; fi; \
nohup $(quote "${REST[@]}") >$log 2>&1 </dev/null & \
echo \$! >$pid; \
echo \"\$(hostname): started pid \$!\""
