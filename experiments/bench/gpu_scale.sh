#!/usr/bin/env bash
# The train step at 1B on a GPU machine, in one go (a lent GPU's time is short): throughput and
# MFU of full-rank AdamW, each method's amortised step over full rank's, and peak device memory
# beside the compiled estimate and the paper's count (experiments/bench/scale_bench.py).
# Results: experiments/results/bench/scale_bench_gpu.{md,json}, copied to OUT_DIR if given.
#
# The device image lacks grain, array_record and portpicker. Fetch their wheels once, here:
#   experiments/bench/gpu_scale.sh --wheels
# then on the device (the run tool with carry [".whl"]):
#   experiments/bench/gpu_scale.sh "$OUT"
#   QUICK=1 experiments/bench/gpu_scale.sh      # nano sizes: checks the script on any machine
#   PROFILE=1 experiments/bench/gpu_scale.sh "$OUT"   # also a trace of one steady step per method
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}

if [[ ${1:-} == --wheels ]]; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
  "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl grain==0.2.18 array_record==0.8.6 portpicker
  exit 0
fi

out_dir=${1:-}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

args=()
name=scale_bench_gpu
if [[ -n ${QUICK:-} ]]; then
  name=scale_bench_quick
  args+=(--quick)
fi
if [[ -n ${PROFILE:-} ]]; then
  args+=(--profile-dir "${out_dir:-/tmp}/trace")
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$python" experiments/bench/scale_bench.py --name "$name" "${args[@]}"
if [[ -n $out_dir ]]; then
  cp "experiments/results/bench/$name.md" "experiments/results/bench/$name.json" "$out_dir"/
fi
