#!/usr/bin/env bash
# One task of a multi-node SLURM job (started by srun in the script slurm_gpu.sh submits):
# add this process's jax.distributed settings to the command and exec it.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [--port PORT] [--dry-run] -- COMMAND [ARGS...]

Run under srun. Appends to COMMAND
  distributed.coordinator_address=HOST:PORT   HOST: the first node of \$SLURM_JOB_NODELIST
                                              (scontrol show hostnames)
  distributed.num_processes=\$SLURM_NTASKS
  distributed.process_id=\$SLURM_PROCID
and execs it. PORT defaults to the one JAX's own SLURM detection picks,
61440 + \$SLURM_JOB_ID % 4096, so that the two agree.

  --port PORT             coordinator port
$(help_common)
EOF
}

PORT=""
option --port PORT
parse_args "$@"
check_command
for var in SLURM_JOB_ID SLURM_JOB_NODELIST SLURM_NTASKS SLURM_PROCID; do
  [[ -n ${!var:-} ]] || die "$var is not set: run me with srun inside a SLURM job"
done
check_match "$SLURM_JOB_ID" '^[0-9]+$' SLURM_JOB_ID "a job number"
[[ -n $PORT ]] || PORT=$((61440 + SLURM_JOB_ID % 4096))
check_match "$PORT" '^[1-9][0-9]*$' --port "a port number"
mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
((${#hosts[@]})) || die "scontrol show hostnames '$SLURM_JOB_NODELIST' printed no host"

run_exec "${REST[@]}" \
  "distributed.coordinator_address=${hosts[0]}:$PORT" \
  "distributed.num_processes=$SLURM_NTASKS" \
  "distributed.process_id=$SLURM_PROCID"
