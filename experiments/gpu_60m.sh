#!/usr/bin/env bash
# The paper's 60m row (Full-Rank, GaLore, Low-Rank, Low-Rank-restarts) on one GPU or TPU host,
# sized to finish in about 10 minutes on one H100. Results: runs/gpu_60m/results.{md,csv,json,png}.
#
#   experiments/gpu_60m.sh /path/to/tensorflow_datasets   # C4 prepared for tfds (c4/en)
#   experiments/gpu_60m.sh                                # no C4: the embedded corpus instead
#
# Extra arguments after the data directory are config overrides for every cell.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 1 && $1 != *=* ]]; then
  data=(data.data_dir="$1")
  shift
else  # offline: the embedded corpus and its own tokenizer (vocabulary 8192, not t5's 32000)
  data=(data.source=embedded data.tokenizer=embedded data.vocab_size=8192
        model.overrides.vocab_size=8192)
fi
exec lowrank-jax benchmark experiments/grids/gpu_60m.yaml "${data[@]}" "$@"
