# shellcheck shell=bash
# Shared helpers of the tpu_scripts, sourced by each script (never run on its own).
#
# A script declares its options with `option`/`flag` or a shared group (tpu_options,
# queued_options, repo_option, venv_option, log_options), calls `parse_args "$@"` (which also
# validates the groups), checks its own options with `require`/`check_match`/`check_choice`
# (a one-line error naming the value, exit status 2), and runs every side effect through
# `run`, `run_piped`, `run_exec` or `write_file`: under --dry-run those print the command,
# quoted so that the printed lines are themselves a runnable shell script, and execute nothing.

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "tpu_scripts need bash >= 4.4 (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 2
fi

PROG=$(basename "$0")
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034  # read by the scripts that source this file
REPO_ROOT=$(dirname "$SCRIPTS_DIR")
DRY_RUN=0
REST=()                     # the arguments after `--`
declare -A _OPTION_VAR=()   # --option -> variable that takes its value
declare -A _FLAG_VAR=()     # --flag -> variable set to 1
_CHECKS=()                  # validations that parse_args runs for the declared option groups

# Print a one-line usage error naming the bad value and exit with status 2.
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

# Print the arguments as one shell-quoted line (no newline): `quote a 'b c'` -> a 'b c'.
# printf %q decides whether an argument needs quoting; one that does is put in single
# quotes (each ' as '\'') which reads better than %q's backslashes and any POSIX shell parses.
quote() {
  local arg escaped sep="" q="'" sq="'\\''"
  for arg in "$@"; do
    printf -v escaped %q "$arg"
    if [[ $escaped == "$arg" ]]; then
      printf '%s%s' "$sep" "$arg"
    else
      printf "%s'%s'" "$sep" "${arg//$q/$sq}"
    fi
    sep=" "
  done
}

# Show a command line: under --dry-run on stdout (the only output), else as `+ line` on stderr.
show() {
  if ((DRY_RUN)); then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
  fi
}

# Run a command after showing it; under --dry-run only show it.
run() {
  show "$(quote "$@")"
  ((DRY_RUN)) || "$@"
}

# run_piped CMD1... '|' CMD2...: run CMD1 | CMD2 the same way.
run_piped() {
  local -a first=()
  while (($#)) && [[ $1 != "|" ]]; do
    first+=("$1")
    shift
  done
  (($#)) || die "run_piped: no '|' in the command"
  shift
  show "$(quote "${first[@]}") | $(quote "$@")"
  ((DRY_RUN)) || "${first[@]}" | "$@"
}

# Like run, but replace this shell by the command (signals reach it directly); under
# --dry-run show it and exit 0.
run_exec() {
  show "$(quote "$@")"
  ((DRY_RUN)) && exit 0
  exec "$@"
}

# write_file PATH CONTENT: under --dry-run print the equivalent `cat > PATH <<'EOF'` block.
write_file() {
  local path=$1 content=$2
  if ((DRY_RUN)); then
    printf 'cat > %s <<'"'"'EOF'"'"'\n%s\nEOF\n' "$(quote "$path")" "$content"
  else
    show "write $(quote "$path")"
    printf '%s\n' "$content" >"$path"
  fi
}

# help_line OPTION TEXT: one aligned line of a usage text.
help_line() {
  printf '  %-24s%s\n' "$1" "$2"
}

# The usage lines of --dry-run and --help, which every script takes.
help_common() {
  help_line --dry-run "print the commands, run nothing"
  help_line "-h, --help" "this help"
}

# option --zone ZONE: `--zone VALUE` or `--zone=VALUE` sets $ZONE.
option() { _OPTION_VAR[$1]=$2; }
# flag --spot SPOT: `--spot` sets $SPOT to 1.
flag() { _FLAG_VAR[$1]=$2; }

# check_group FUNCTION: have parse_args run FUNCTION (the validation of an option group).
check_group() {
  [[ " ${_CHECKS[*]} " == *" $1 "* ]] || _CHECKS+=("$1")
}

# Parse "$@" against the declared options (--help calls the script's `usage`; the arguments
# after `--` land in REST), then validate the declared option groups.
parse_args() {
  local opt value inline check
  while (($#)); do
    opt=$1 inline=0
    case $opt in
      --) shift; REST=("$@"); break ;;
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
      --*=*) value=${opt#*=} opt=${opt%%=*} inline=1 ;;
    esac
    if [[ -v _OPTION_VAR[$opt] ]]; then
      if ((!inline)); then
        (($# >= 2)) || die "$opt needs a value"
        value=$2
        shift
      fi
      printf -v "${_OPTION_VAR[$opt]}" '%s' "$value"
    elif [[ -v _FLAG_VAR[$opt] ]]; then
      ((!inline)) || die "$opt takes no value (got '$value')"
      printf -v "${_FLAG_VAR[$opt]}" '%s' 1
    else
      die "unknown argument '$opt' (see $PROG --help)"
    fi
    shift
  done
  for check in "${_CHECKS[@]}"; do
    "$check"
  done
}

# For scripts that take nothing after --.
check_no_rest() {
  ((${#REST[@]} == 0)) || die "unexpected arguments after --: $(quote "${REST[@]}")"
}

# For scripts that run the command given after --.
check_command() {
  ((${#REST[@]})) || die "no command given: put it after --, e.g. -- lowrank-jax train --config FILE"
}

# require VALUE OPTION HINT: die unless VALUE is non-empty.
require() {
  [[ -n $1 ]] || die "$2 is required${3:+ ($3)}"
}

# check_match VALUE REGEX OPTION WHAT: die unless VALUE matches the extended REGEX.
check_match() {
  [[ $1 =~ $2 ]] || die "$3 '$1' is not $4"
}

# check_choice VALUE OPTION CHOICE...: die unless VALUE is one of the choices.
check_choice() {
  local value=$1 opt=$2 choice
  shift 2
  for choice in "$@"; do
    [[ $value == "$choice" ]] && return 0
  done
  die "$opt '$value' is not one of: $*"
}

# check_positive_int VALUE OPTION
check_positive_int() {
  check_match "$1" '^[1-9][0-9]*$' "$2" "a positive integer"
}

# ---- the TPU VM scripts' option groups ----

# Declare --name/--zone/--project (defaults from TPU_NAME, TPU_ZONE, TPU_PROJECT).
tpu_options() {
  TPU_NAME=${TPU_NAME:-} TPU_ZONE=${TPU_ZONE:-} TPU_PROJECT=${TPU_PROJECT:-}
  option --name TPU_NAME
  option --zone TPU_ZONE
  option --project TPU_PROJECT
  check_group check_tpu_options
}

help_tpu() {
  help_line "--name NAME" "TPU VM name (env TPU_NAME)"
  help_line "--zone ZONE" "e.g. us-central2-b (env TPU_ZONE)"
  help_line "--project PROJECT" "default: gcloud's configured project (env TPU_PROJECT)"
}

# Validate the TPU options and fill GCLOUD_SCOPE (--zone=..., --project=...).
check_tpu_options() {
  require "$TPU_NAME" --name "or set TPU_NAME"
  check_match "$TPU_NAME" '^[a-z]([-a-z0-9]*[a-z0-9])?$' --name \
    "a TPU name (lower-case letters, digits and '-', starting with a letter)"
  require "$TPU_ZONE" --zone "or set TPU_ZONE, e.g. us-central2-b"
  check_match "$TPU_ZONE" '^[a-z]+-[a-z]+[0-9]+-[a-z]$' --zone "a zone like us-central2-b"
  GCLOUD_SCOPE=("--zone=$TPU_ZONE")
  if [[ -n $TPU_PROJECT ]]; then
    check_match "$TPU_PROJECT" '^[a-z][-a-z0-9.:]*[a-z0-9]$' --project "a project id"
    GCLOUD_SCOPE+=("--project=$TPU_PROJECT")
  fi
}

# Declare --queued and --queued-resource ID (create and delete).
queued_options() {
  QUEUED=0 QUEUED_ID=""
  option --queued-resource QUEUED_ID
  flag --queued QUEUED
  check_group check_queued_options
}

help_queued() {
  help_line --queued "$1"
  help_line "--queued-resource ID" "its id (implies --queued; default NAME)"
}

# --queued-resource implies --queued; the id defaults to the TPU name.
check_queued_options() {
  [[ -z $QUEUED_ID ]] || QUEUED=1
  ((QUEUED)) || return 0
  QUEUED_ID=${QUEUED_ID:-$TPU_NAME}
  check_match "$QUEUED_ID" '^[a-z]([-a-z0-9]*[a-z0-9])?$' --queued-resource "a queued resource id"
}

# Where the repository (repo_option) and its virtual environment (venv_option) live on every
# worker: paths relative to the remote home directory unless absolute.
repo_option() {
  REMOTE_REPO=${TPU_REPO_DIR:-lowrank_jax}
  option --repo-dir REMOTE_REPO
  check_group check_remote_options
}

venv_option() {
  REMOTE_VENV=${TPU_VENV:-lowrank_jax_venv}
  option --venv REMOTE_VENV
  check_group check_remote_options
}

# help_repo TEXT
help_repo() {
  help_line "--repo-dir DIR" "$1 (default: lowrank_jax; env TPU_REPO_DIR)"
}

help_venv() {
  help_line "--venv DIR" "the workers' virtual environment (default: lowrank_jax_venv; env TPU_VENV)"
}

# Validate whichever of the two the script declared.
check_remote_options() {
  [[ ! -v REMOTE_REPO ]] || require "$REMOTE_REPO" --repo-dir
  [[ ! -v REMOTE_VENV ]] || require "$REMOTE_VENV" --venv
}

# Where launch writes and logs reads the per-host logs (relative to the repository).
log_options() {
  LOG_DIR=logs
  LOG_NAME=train
  option --log-dir LOG_DIR
  option --log-name LOG_NAME
  check_group check_log_options
}

# help_log DIR_TEXT NAME_TEXT
help_log() {
  help_line "--log-dir DIR" "$1 (default: logs)"
  help_line "--log-name NAME" "$2 (default: train)"
}

check_log_options() {
  require "$LOG_DIR" --log-dir
  check_match "$LOG_NAME" '^[A-Za-z0-9_.-]+$' --log-name "a file name (letters, digits, '_', '.', '-')"
}

# The options of logs.sh and stop.sh, which find what launch.sh started.
launched_options() {
  repo_option
  log_options
}

help_launched() {
  help_repo "as given to launch.sh"
  help_log "as given to launch.sh" "as given to launch.sh"
}

# The per-host log file, relative to the repository; $(hostname) expands on the worker.
remote_log_path() {
  # shellcheck disable=SC2016  # $(hostname) is meant for the worker's shell
  printf '%s.$(hostname).log' "$(quote "$LOG_DIR/$LOG_NAME")"
}

# The worker's shell code for PATH: quoted, relative to the worker's $HOME unless absolute.
remote_home_path() {
  if [[ $1 == /* ]]; then
    quote "$1"
  else
    # shellcheck disable=SC2016  # $HOME is the worker's
    printf '"$HOME"/%s' "$(quote "$1")"
  fi
}

# check_worker VALUE: `all` or worker indices like 0 or 0,3.
check_worker() {
  check_match "$1" '^(all|[0-9]+(,[0-9]+)*)$' --worker "'all' or worker indices like 0 or 0,3"
}

# tpu_ssh WORKER SCRIPT: run SCRIPT (shell code) on the given workers of the TPU VM.
tpu_ssh() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_SCOPE[@]}" \
    --worker="$1" --command="$2"
}
