#!/usr/bin/env bash
# Put the repository on every worker of a TPU VM and install it with jax[tpu] (see README.md).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [--git URL [--branch BRANCH] | --source DIR] [options]

On every worker: get the repository (git clone of URL, or a copy of the local checkout DIR
sent with gcloud scp), make a virtual environment with uv (Python PYTHON, downloaded if the
image lacks it) and pip install -e the repository plus jax[tpu].

$(help_tpu)
  --git URL               clone this repository (on an existing clone: fetch and check out)
  --branch BRANCH         branch or tag to clone (default: the remote's default branch)
  --source DIR            copy this local checkout instead (default: $REPO_ROOT):
                          git's tracked and untracked files, less what .gitignore ignores
$(help_repo "where the repository goes on the workers")
$(help_venv)
  --python VERSION        Python of that environment (default: 3.12; the package needs >= 3.11)
  --jax SPEC              the JAX requirement (default: jax[tpu])
$(help_common)
EOF
}

tpu_options
repo_option
venv_option
GIT_URL="" BRANCH="" SOURCE_DIR="" PYTHON_VERSION=3.12 JAX_SPEC="jax[tpu]"
option --git GIT_URL
option --branch BRANCH
option --source SOURCE_DIR
option --python PYTHON_VERSION
option --jax JAX_SPEC
parse_args "$@"

check_no_rest
[[ -z $GIT_URL || -z $SOURCE_DIR ]] || die "--git '$GIT_URL' and --source '$SOURCE_DIR' exclude each other"
[[ -z $BRANCH || -n $GIT_URL ]] || die "--branch '$BRANCH' needs --git"
check_match "$PYTHON_VERSION" '^3\.[0-9]+(\.[0-9]+)?$' --python "a Python version like 3.12"
require "$JAX_SPEC" --jax

repo=$(quote "$REMOTE_REPO")
# pip and uv read a bare relative name as a package name: make it a path.
[[ $REMOTE_REPO == /* ]] || repo_path="./$repo"
if [[ -n $GIT_URL ]]; then
  check_match "$GIT_URL" '^(https://|git@|ssh://|file://)' --git "a git URL (https://, git@, ssh:// or file://)"
  clone=(git clone --depth=1)
  [[ -z $BRANCH ]] || clone+=(--branch "$BRANCH")
  get_repo="if [ -d $repo/.git ]; then git -C $repo fetch --depth=1 origin $(quote "${BRANCH:-HEAD}")"
  get_repo+=" && git -C $repo checkout --force FETCH_HEAD; else $(quote "${clone[@]}" "$GIT_URL") $repo; fi"
else
  SOURCE_DIR=${SOURCE_DIR:-$REPO_ROOT}
  if [[ ! -f $SOURCE_DIR/pyproject.toml ]] || ! git -C "$SOURCE_DIR" rev-parse --git-dir >/dev/null 2>&1; then
    die "--source '$SOURCE_DIR' is not a git checkout of the project (no pyproject.toml or .git)"
  fi
  archive=lowrank_jax_source.tar.gz
  local_archive="${TMPDIR:-/tmp}/$TPU_NAME.$archive"
  ((DRY_RUN)) || trap 'rm -f "$local_archive"' EXIT
  # Tracked and untracked files, without what .gitignore ignores (runs/, caches, builds).
  run_piped git -C "$SOURCE_DIR" ls-files -z --cached --others --exclude-standard \
    '|' tar -C "$SOURCE_DIR" -czf "$local_archive" --null -T -
  run gcloud compute tpus tpu-vm scp "$local_archive" "$TPU_NAME:$archive" "${GCLOUD_SCOPE[@]}" --worker=all
  get_repo="mkdir -p $repo && tar -xzf $archive -C $repo && rm -f $archive"
fi

venv=$(quote "$REMOTE_VENV")
# shellcheck disable=SC2016  # $HOME is the worker's
uv='"$HOME/.local/bin/uv"'
tpu_ssh all "set -euo pipefail; $get_repo; \
python3 -m pip install --user --quiet --upgrade uv; \
$uv venv --allow-existing --python $(quote "$PYTHON_VERSION") $venv; \
$uv pip install --python $venv/bin/python -e ${repo_path:-$repo} $(quote "$JAX_SPEC")"
