#!/usr/bin/env bash
# The speed benchmarks on a GPU machine, in one go (a lent GPU's time is short):
# the optimizer table (also on layer-stacked trees), the train step against HF
# transformers, and the refreshes on 1B shapes. Results go to
# experiments/results/bench/*_gpu.{md,json} and, if given, are copied to OUT_DIR
# after each benchmark (a run cut short keeps what finished).
#
# Usage: experiments/bench/gpu.sh [OUT_DIR]
#   QUICK=1 experiments/bench/gpu.sh   # tiny shapes: checks the script on any machine
#   BENCHES="optim train" experiments/bench/gpu.sh   # a subset of optim, train, refresh
set -euo pipefail
cd "$(dirname "$0")/../.."
out_dir=${1:-}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45  # JAX and PyTorch share the GPU
python=${PYTHON:-python3}

rows=(optax.adamw optax.contrib.galore galore "galore (leaves separate)" fira apollo
      "galore (randomized refresh)" "optax.adamw [stacked]" "galore [stacked]"
      torch.optim.AdamW galore-torch "fira (torch)" apollo_torch)
if [[ -n ${QUICK:-} ]]; then
  optim=(--quick --repeats 2 --refresh-repeats 1)
  train=(--model nano --seq 64 --batch 2 --rank 8 --repeats 2 --refresh-repeats 1)
  refresh=(--quick --repeats 1)
else
  optim=(--repeats 30 --refresh-repeats 3)
  train=(--batch 32 --repeats 20 --refresh-repeats 3)
  refresh=(--repeats 5)
fi

keep() {  # copies the named result files to OUT_DIR
  [[ -z $out_dir ]] || cp "${@/#/experiments/results/bench/}" "$out_dir"/
}

benches=" ${BENCHES:-optim train refresh} "

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
if [[ $benches == *" optim "* ]]; then
  "$python" experiments/bench/optim_bench.py "${optim[@]}" --stacked --name optim_bench_gpu \
    --only "${rows[@]}"
  keep optim_bench_gpu.md optim_bench_gpu.json
fi
if [[ $benches == *" train "* ]]; then
  "$python" experiments/bench/train_step_bench.py "${train[@]}" --name train_step_bench_gpu
  keep train_step_bench_gpu.md train_step_bench_gpu.json
fi
if [[ $benches == *" refresh "* ]]; then
  "$python" experiments/bench/refresh_bench.py "${refresh[@]}" --name refresh_bench_gpu
  keep refresh_bench_gpu.md refresh_bench_gpu.json
fi
