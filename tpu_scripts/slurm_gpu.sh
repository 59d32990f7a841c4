#!/usr/bin/env bash
# Submit a multi-node GPU training job to SLURM: one process per node (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --nodes N [options] -- COMMAND [ARGS...]

Write an sbatch script and submit it. The job runs one task per node (srun); each task runs
slurm_task.sh, which appends distributed.coordinator_address (the job's first node),
distributed.num_processes (\$SLURM_NTASKS) and distributed.process_id (\$SLURM_PROCID) to
COMMAND. Each process drives all GPUS GPUs of its node: JAX_LOCAL_DEVICE_IDS lists them
(JAX's own SLURM detection, distributed.auto=true, would otherwise give each process only
GPU \$SLURM_LOCALID). run_dir must be on the shared file system.

  --nodes N               number of nodes (required)
  --gpus-per-node GPUS    default: 8
  --job-name NAME         default: lowrank-jax
  --partition P           sbatch --partition (or set SBATCH_PARTITION)
  --account A             sbatch --account (or set SBATCH_ACCOUNT)
  --time T                sbatch --time, e.g. 2-00:00:00 (or set SBATCH_TIMELIMIT)
  --port PORT             coordinator port (default: 61440 + job id % 4096, as JAX picks)
  --repo-dir DIR          the repository on the shared file system (default: $REPO_ROOT)
  --venv DIR              a virtual environment to put first on PATH (default: none)
  --log-dir DIR           in the repository (default: logs): the batch step's output
                          NAME.<jobid>.out and each task's NAME.<jobid>.<task>.log
  --script PATH           where the sbatch script goes (default: DIR/LOG_DIR/NAME.sbatch)
$(help_common)
Other sbatch options: the SBATCH_* environment variables that sbatch reads itself.

Example:
  $PROG --nodes 4 --partition gpu -- lowrank-jax train \\
      --config experiments/configs/llama_1b.yaml run_dir=/shared/runs/llama_1b
EOF
}

NODES="" GPUS=8 JOB_NAME=lowrank-jax PARTITION="" ACCOUNT="" TIME="" PORT=""
REPO_DIR=$REPO_ROOT VENV="" LOG_DIR=logs SCRIPT=""
option --nodes NODES
option --gpus-per-node GPUS
option --job-name JOB_NAME
option --partition PARTITION
option --account ACCOUNT
option --time TIME
option --port PORT
option --repo-dir REPO_DIR
option --venv VENV
option --log-dir LOG_DIR
option --script SCRIPT
parse_args "$@"

require "$NODES" --nodes "e.g. --nodes 4"
check_positive_int "$NODES" --nodes
check_positive_int "$GPUS" --gpus-per-node
check_match "$JOB_NAME" '^[A-Za-z0-9_.-]+$' --job-name "a name of letters, digits, '_', '.', '-'"
[[ -z $PORT ]] || check_positive_int "$PORT" --port
[[ -z $TIME ]] || check_match "$TIME" '^[0-9:-]+$' --time "a SLURM time like 2-00:00:00 or 90"
# The #SBATCH lines are not shell: no quoting there, so no spaces or quotes either.
check_match "$PARTITION" '^[A-Za-z0-9_.,-]*$' --partition "a partition name (or a list a,b)"
check_match "$ACCOUNT" '^[A-Za-z0-9_.-]*$' --account "an account name"
[[ $REPO_DIR == /* ]] || die "--repo-dir '$REPO_DIR' is not an absolute path"
[[ -z $VENV || $VENV == /* ]] || die "--venv '$VENV' is not an absolute path"
check_command
SCRIPT=${SCRIPT:-$REPO_DIR/$LOG_DIR/$JOB_NAME.sbatch}

device_ids=$(seq -s, 0 $((GPUS - 1)))
task=("$REPO_DIR/tpu_scripts/slurm_task.sh")
[[ -z $PORT ]] || task+=(--port "$PORT")
sbatch_script="#!/bin/bash
#SBATCH --job-name=$JOB_NAME
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --exclusive
${PARTITION:+#SBATCH --partition=$PARTITION
}${ACCOUNT:+#SBATCH --account=$ACCOUNT
}${TIME:+#SBATCH --time=$TIME
}# Written by tpu_scripts/slurm_gpu.sh. One process per node drives all $GPUS of its GPUs.
set -euo pipefail
cd $(quote "$REPO_DIR")
${VENV:+export VIRTUAL_ENV=$(quote "$VENV") PATH=$(quote "$VENV/bin"):\"\$PATH\"
}export JAX_LOCAL_DEVICE_IDS=$device_ids
srun --kill-on-bad-exit=1 $(quote "--output=$LOG_DIR/$JOB_NAME.%j.%t.log") $(quote "${task[@]}") -- $(quote "${REST[@]}")"

dirs=("$REPO_DIR/$LOG_DIR")
[[ $(dirname "$SCRIPT") == "${dirs[0]}" ]] || dirs+=("$(dirname "$SCRIPT")")
run mkdir -p "${dirs[@]}"
write_file "$SCRIPT" "$sbatch_script"
run sbatch "--output=$REPO_DIR/$LOG_DIR/$JOB_NAME.%j.out" "$SCRIPT"
