"""Does the input pipeline keep up with the train step? Host throughput against consumption.

The corpus is C4-shaped: json.gz shards of ``{"text", "timestamp", "url"}`` records whose
texts are cut from the embedded corpus (King James Bible, training chapters) at lengths
drawn from a log-normal of median 1,200 characters, mean about 2,000 (C4 ``en``: about
750 GB of text in 365M documents, Raffel et al. 2020). The tokenizer is the project's
embedded SentencePiece unigram model (8,192 pieces, trained offline on the same corpus):
t5-base's ``spiece.model`` (32,000 pieces, the paper's, arXiv 2505.22922, experimental protocol) cannot
be downloaded here and no installed package ships it. A larger unigram vocabulary
searches more pieces per position, so read the tokenizing rates as an upper bound.

Measured, each on one process of this host:

* ``read``: documents/s streamed from the shards (gzip, JSON, window shuffle);
* ``tokenize``: documents/s and tokens/s of ``tokenizer.encode`` alone;
* ``pipeline``: rows/s out of :func:`lowrank_jax.data.make_train_iterator` (read,
  tokenize, pad or pack, batch) with ``source='shards'``, in the paper's mode (one
  document per row, 256 positions) and packed, in-process and with grain workers;
* ``wait``: how long a train step waits for its batch. A stand-in device thread runs
  each step for ``T`` seconds (the host is free meanwhile, as under JAX's asynchronous
  dispatch) and the loop feeds it as :func:`lowrank_jax.train.loop.train` does: fetch
  batch ``k + 1``, dispatch it, wait for step ``k``. The device's idle time per step is
  the step's wait on input.

The consumption of the paper's 1B step on an H200 is estimated, not measured (no device
here): tokens/s = MFU x 989.4 TFLOP/s (dense bf16) / FLOPs per token, with PaLM's count
``6 N + 12 L d s`` (N = 1.274e9 parameters that multiply activations, L = 24, d = 2048,
s = 256: 7.79 GFLOP/token). The lower MFU is the FLOP rate our 60M fp32 step reached on
the H200 (``train_step_bench_gpu.md``: 407k tokens/s x 263 MFLOP/token = 107 TFLOP/s,
10.8% of the bf16 peak), the upper one 50%, a well-run bf16 step of that size.

Usage::

  PYTHONPATH=. python experiments/bench/input_bench.py           # about 3 minutes
  PYTHONPATH=. python experiments/bench/input_bench.py --quick   # checks the script
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import queue
import tempfile
import threading
import time

import numpy as np
import psutil

from lowrank_jax.data import DataConfig, load_tokenizer, make_train_iterator
from lowrank_jax.data.sources import bible, process_documents

from experiments.bench.timing import write_report

SEQ_LEN = 256
LOCAL_BATCH = 64
H200_DENSE_BF16 = 989.4e12
# PaLM's model FLOPs per token of the paper's 1B LLaMA at s = 256 (see the module docstring).
LLAMA_1B = {"layers": 24, "hidden": 2048, "intermediate": 5461, "vocab": 32000}
LLAMA_60M = {"layers": 8, "hidden": 512, "intermediate": 1376, "vocab": 32000}
MEASURED_60M_H200_TOKENS_PER_S = 407113  # train_step_bench_gpu.md, full rank, lowrank_jax


def flops_per_token(layers: int, hidden: int, intermediate: int, vocab: int) -> float:
  """``6 N + 12 L d s``, N the weights that multiply activations (all but the embedding)."""
  per_layer = 4 * hidden * hidden + 3 * hidden * intermediate
  matmul_weights = layers * per_layer + vocab * hidden
  return 6 * matmul_weights + 12 * layers * hidden * SEQ_LEN


def c4_like_shards(folder: str, num_shards: int, docs_per_shard: int, seed: int = 0) -> str:
  """Writes C4-shaped json.gz shards; returns their glob pattern."""
  text = " ".join(bible.chapters("train"))
  rng = np.random.default_rng(seed)
  start = 0
  for shard in range(num_shards):
    path = os.path.join(folder, f"c4-train.{shard:05d}-of-{num_shards:05d}.json.gz")
    with gzip.open(path, "wt", encoding="utf-8") as out:
      for index in range(docs_per_shard):
        length = int(rng.lognormal(np.log(1200), 1.0)) + 20
        start = start + length if start + 2 * length < len(text) else 0
        record = {
            "text": text[start : start + length],
            "timestamp": "2019-04-25",
            "url": f"u{index}",
        }
        out.write(json.dumps(record) + "\n")
  return os.path.join(folder, "c4-train.*.json.gz")


def cpu_seconds() -> float:
  """CPU time of this process and its live children (grain workers), user plus system."""
  processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
  total = 0.0
  for process in processes:
    try:
      times = process.cpu_times()
    except psutil.NoSuchProcess:
      continue
    total += times.user + times.system
  return total


def rates(count_next, seconds: float) -> dict[str, float]:
  """Calls ``count_next()`` (returns a count) for ``seconds``: counts per wall second and per
  CPU second (this process and its workers), after one warm-up call."""
  count_next()  # warm-up: opens files, starts workers
  count, wall, cpu = 0, time.perf_counter(), cpu_seconds()
  while time.perf_counter() - wall < seconds:
    count += count_next()
  wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
  return {"per_wall_s": count / wall, "per_cpu_s": count / cpu}


def config_for(pattern: str, **overrides) -> DataConfig:
  settings = dict(
      source="shards",
      paths=(pattern,),
      validation_paths=(pattern,),
      seq_len=SEQ_LEN,
      global_batch_size=LOCAL_BATCH,
      shuffle_window=1000,
      read_threads=1,
  )
  return DataConfig(**{**settings, **overrides})


def device_wait(iterator, step_seconds: float, steps: int) -> float:
  """Mean seconds a stand-in device of ``step_seconds`` a step idles waiting for a batch.

  The first step is left out: before it the device waits for the pipeline to start.
  """
  dispatched: queue.Queue = queue.Queue(maxsize=1)
  finished = [threading.Event() for _ in range(steps)]
  idle = []

  def device():
    for step in range(steps):
      start = time.perf_counter()
      dispatched.get()
      idle.append(time.perf_counter() - start)
      time.sleep(step_seconds)
      finished[step].set()

  worker = threading.Thread(target=device, daemon=True)
  worker.start()
  for step in range(steps):
    dispatched.put(next(iterator))
    if step:
      finished[step - 1].wait()
  finished[-1].wait()
  return float(np.mean(idle[1:]))


def batch_seconds(iterator, batches: int) -> float:
  """Median wall seconds to take one batch from ``iterator`` (after one warm-up batch)."""
  next(iterator)
  times = []
  for _ in range(batches):
    start = time.perf_counter()
    next(iterator)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure(pattern: str, quick: bool, worker_counts: list[int]) -> dict:
  """Every number of the report (see the module docstring), as a JSON-able dict."""
  seconds = 2.0 if quick else 10.0
  tokenizer = load_tokenizer(DataConfig())
  results: dict = {"seconds_per_measure": seconds, "local_batch": LOCAL_BATCH, "seq_len": SEQ_LEN}
  stream = iter(
      process_documents(
          config_for(pattern), "train", shuffle=True, repeat=True, process_index=0, process_count=1
      )
  )
  documents = [next(stream) for _ in range(2000)]
  results["characters_per_document"] = float(np.mean([len(d) for d in documents]))
  results["tokens_per_document"] = float(np.mean([len(tokenizer.encode(d)) for d in documents]))
  results["read_documents"] = rates(lambda: len([next(stream) for _ in range(200)]), seconds)
  cursor = itertools.cycle(documents)
  results["tokenize_documents"] = rates(
      lambda: len([tokenizer.encode(next(cursor)) for _ in range(100)]), seconds
  )

  pipelines = {}
  for mode in ("paper", "packed"):
    for workers in (0, *worker_counts):
      iterator = make_train_iterator(config_for(pattern, mode=mode, num_workers=workers), tokenizer)
      pipelines[f"{mode}, {workers} workers"] = rates(
          lambda: len(next(iterator)["input_ids"]), seconds
      )
      if workers:
        iterator.close()
  results["pipeline_rows"] = pipelines

  waits = {}
  for workers, prefetch in ((0, 0), (0, 2), (max(worker_counts), 2)):
    for ratio in (0.5, 1.0, 2.0):
      config = config_for(pattern, num_workers=workers, prefetch_batches=prefetch)
      iterator = make_train_iterator(config, tokenizer)
      production = batch_seconds(iterator, 5 if quick else 15)
      waits[f"{workers} workers, {prefetch} batches prefetched, step {ratio:g}x"] = {
          "batch_s": production,
          "step_s": ratio * production,
          "wait_s": device_wait(iterator, ratio * production, 8 if quick else 30),
      }
      if workers:
        iterator.close()
  results["device_wait"] = waits

  results["h200_1b_consumption"] = {
      f"{mfu:g}": mfu * H200_DENSE_BF16 / flops_per_token(**LLAMA_1B) for mfu in (0.108, 0.5, 1.0)
  }
  results["h200_60m_fp32_tflops"] = (
      MEASURED_60M_H200_TOKENS_PER_S * flops_per_token(**LLAMA_60M) / 1e12
  )
  return results


def report_rows(results: dict) -> list[list[str]]:
  """The Markdown table: stage, rate per wall second here, rate per CPU second (a core)."""
  read, tokenize = results["read_documents"], results["tokenize_documents"]
  per_document = results["tokens_per_document"]
  rows = [
      [
          "read json.gz shards (window shuffle)",
          f"{read['per_wall_s']:,.0f} documents/s",
          f"{read['per_cpu_s']:,.0f} documents/s",
      ],
      [
          "tokenize (embedded SentencePiece, 8,192 pieces)",
          f"{tokenize['per_wall_s']:,.0f} documents/s",
          f"{tokenize['per_cpu_s']:,.0f} documents/s = {tokenize['per_cpu_s'] * per_document:,.0f}"
          " tokens/s",
      ],
  ]
  for name, rate in results["pipeline_rows"].items():
    rows.append(
        [
            f"pipeline, {name}",
            f"{rate['per_wall_s']:,.0f} rows/s",
            f"{rate['per_cpu_s']:,.0f} rows/s = {rate['per_cpu_s'] * SEQ_LEN:,.0f} positions/s",
        ]
    )
  one_core = results["pipeline_rows"]["paper, 0 workers"]["per_cpu_s"]
  for mfu, tokens_per_s in results["h200_1b_consumption"].items():
    rows_per_s = tokens_per_s / SEQ_LEN
    rows.append(
        [
            f"1B step on one H200 consumes (MFU {float(mfu):.1%}, estimate)",
            f"{rows_per_s:,.0f} rows/s = {tokens_per_s:,.0f} positions/s",
            f"{rows_per_s / one_core:.2f} cores (paper mode)",
        ]
    )
  for name, wait in results["device_wait"].items():
    rows.append(
        [
            f"step's wait on input, {name}",
            f"{wait['wait_s'] * 1e3:.1f} ms a step of {wait['step_s'] * 1e3:.0f} ms",
            f"batch made in {wait['batch_s'] * 1e3:.0f} ms",
        ]
    )
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny corpus, short timings")
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="grain workers")
  args = parser.parse_args(argv)
  folder = tempfile.mkdtemp(prefix="input_bench_")
  pattern = c4_like_shards(folder, 8, 300 if args.quick else 3000)
  results = measure(pattern, args.quick, args.workers)
  notes = [
      f"C4-shaped json.gz shards ({results['characters_per_document']:,.0f} characters,"
      f" {results['tokens_per_document']:.0f} tokens a document), rows of {SEQ_LEN} positions,"
      f" local batches of {LOCAL_BATCH}. This host has {os.cpu_count()} cores shared with other"
      f" jobs (load average {os.getloadavg()[0]:.1f} at the end), so rates per wall second"
      " are what this host gave; rates per CPU second (this process and its grain workers)"
      " are what one dedicated core gives, and set how many cores a run needs. The step's wait:"
      " a stand-in device step of the given length, fed as the trainer feeds it. grain"
      " workers (`data.num_workers`) each read their own shards and make whole batches.",
      "",
      "Consumption is estimated (no device here): positions/s = MFU x 989.4 TFLOP/s (H200"
      f" dense bf16) / {flops_per_token(**LLAMA_1B) / 1e9:.2f} GFLOP a position (PaLM's"
      " 6N + 12Lds for the paper's 1B at s = 256); MFU 10.8% is the FLOP rate our 60M fp32"
      f" step reached on an H200 ({results['h200_60m_fp32_tflops']:.0f} TFLOP/s,"
      " train_step_bench_gpu.md), 50% a well-run bf16 step of that size, 100% the ceiling."
      " In paper mode a row is one document (tokenized whole, then truncated to 256).",
  ]
  write_report(
      "input_bench" + ("_quick" if args.quick else ""),
      "Input pipeline against the train step (json.gz shards, paper and packed rows)",
      notes,
      ["stage", "here (wall)", "one core (CPU time)"],
      report_rows(results),
      results,
  )


if __name__ == "__main__":
  main()
