"""The train step at the sizes users train: throughput, model FLOPs utilisation and memory.

For one model size (default LLaMA 1B, bf16, sequence 256, the paper's global batch of 512
sequences, arXiv 2505.22922, experimental protocol) this measures, per method, the trainer's own jitted step
(:meth:`lowrank_jax.train.run.Run.train_step`, built from the same config as
``lowrank-jax train``):

* ``compile_s``: lowering plus compilation, reported apart from the step times;
* ``steady_s``: the median step with no refresh, reset or refactorization in it;
* ``event_s``: the step that refreshes every projector (GaLore, Fira, APOLLO) or refactorizes
  the factors and resets the moments (Low-Rank-restarts). GaLore-family states refresh at
  their first update; the restarts' counters are set one update before their period ends;
* ``amortised_s = (event_s + (T - 1) steady_s) / T`` with the method's period ``T``;
* ``mfu``: model FLOPs per second over the accelerator's dense peak. Model FLOPs per token
  are PaLM's count (Chowdhery et al. 2022, App. B): ``6 N + 12 L d s``, ``N`` the parameters
  that multiply activations (all but the input embedding), ``L`` layers, ``d`` the width,
  ``s`` the sequence length, each counted on the method's own model: Low-Rank's factored
  linears do less arithmetic per token than the dense model, so compare methods by
  ``tokens/s`` and the step-time ratio, and read MFU as each program's use of the chip;
* ``peak_bytes``: the device's ``peak_bytes_in_use`` after the steps (each method runs in a
  process of its own, so the peak is that method's alone), beside XLA's compiled estimate
  (arguments + outputs + temporaries - aliased) and the paper's analytic count of weights and
  optimizer state (:func:`lowrank_jax.memory.analytic.analytic_memory`).

The micro-batch is the largest power of two (up to the global batch) whose compiled full-rank
step fits in ``--memory-fraction`` of the device's memory, found from two compiles (the
temporaries grow linearly with the micro-batch) and checked by a third; the rest of the
global batch is gradient accumulation (``schedule.grad_accum``), the same for every method.

Usage (one process per method is spawned; results go to ``experiments/results/bench/``)::

  PYTHONPATH=. python experiments/bench/scale_bench.py                # 1b on the device
  PYTHONPATH=. python experiments/bench/scale_bench.py --quick        # nano, checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

METHODS = ("full_rank", "galore", "fira", "apollo", "low_rank_restarts")
# Dense bf16 peak of one accelerator, by its device kind (vendor datasheets; FLOP/s).
DENSE_BF16_PEAK = {
    "NVIDIA H200": 989.4e12,
    "NVIDIA H100 80GB HBM3": 989.4e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "TPU v5 lite": 197e12,
    "TPU v4": 275e12,
}
# A peak for the CPU so the script's arithmetic is exercised there; not a real ceiling.
CPU_NOMINAL_PEAK = 1e12


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", default="1b", help="model preset")
  parser.add_argument("--dtype", default="bf16", help="dtype policy (fp32, bf16, mixed)")
  parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
  parser.add_argument("--global-batch", type=int, default=512, help="sequences per step")
  parser.add_argument("--micro-batch", type=int, default=0, help="0: largest that fits")
  parser.add_argument("--gap", type=int, default=200, help="refresh / restart period T")
  parser.add_argument("--repeats", type=int, default=5, help="timed steady steps")
  parser.add_argument("--remat", action="store_true", help="rematerialise blocks")
  parser.add_argument("--memory-fraction", type=float, default=0.85)
  parser.add_argument(
      "--device-memory-gb",
      type=float,
      default=None,
      help="memory to fit the micro-batch in (default: the device's own limit; on a CPU the"
      " micro-batch search runs only when this is given)",
  )
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--name", default="scale_bench_gpu", help="results file name")
  parser.add_argument(
      "--profile-dir", default=None, help="write a jax.profiler trace of one steady step here"
  )
  parser.add_argument("--quick", action="store_true", help="nano sizes: checks the script")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # worker: one method
  parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # worker
  args = parser.parse_args(argv)
  if args.quick:
    args.size, args.seq, args.global_batch, args.gap, args.repeats = "nano", 64, 8, 4, 2
    args.dtype = "fp32"
  for name in ("seq", "global_batch", "gap", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
  if args.micro_batch < 0 or (args.micro_batch and args.global_batch % args.micro_batch):
    parser.error(f"--micro-batch={args.micro_batch} must divide --global-batch")
  if not 0 < args.memory_fraction <= 1:
    parser.error(f"--memory-fraction={args.memory_fraction} must be in (0, 1]")
  unknown = sorted(set(args.methods) - set(METHODS))
  if unknown:
    parser.error(f"--methods {unknown[0]!r} is not measured here; allowed: {list(METHODS)}")
  return args


def case(args, method: str, micro_batch: int):
  """The trainer's config of one measurement: ``method`` at the size's paper rank."""
  from lowrank_jax.memory.report import case_config

  overrides = [
      f"data.global_batch_size={args.global_batch}",
      f"eval.batch_size={args.global_batch}",
      f"schedule.grad_accum={args.global_batch // micro_batch}",
      f"model.remat={str(args.remat).lower()}",
      "schedule.kind=constant",
  ]
  if method in ("galore", "fira", "apollo"):
    overrides.append(f"optimizer.options.update_proj_gap={args.gap}")
  if method == "low_rank_restarts":
    overrides.append(f"optimizer.reset_every={args.gap}")
    overrides.append(f"optimizer.refactorize_every={args.gap}")
    # The paper's recovery R = 10 of T = 200 steps (R / T = 5%), at any T.
    overrides.append(f"optimizer.recovery_steps={max(2, args.gap // 20)}")
  return case_config(args.size, method, args.dtype, seq_len=args.seq, overrides=overrides)


def model_flops_per_token(model_config) -> float:
  """PaLM's ``6 N + 12 L d s`` (see the module docstring)."""
  from lowrank_jax.models import count_params

  embedding = model_config.vocab_size * model_config.hidden_size
  matmul_params = count_params(model_config) - embedding
  attention = 12 * model_config.num_layers * model_config.hidden_size * model_config.max_seq_len
  return 6 * matmul_params + attention


def compiled_bytes(run, rows: int):
  """XLA's memory analysis of ``run``'s step on a batch of ``rows`` sequences, and the
  compiled step (nothing is allocated)."""
  import jax
  import jax.numpy as jnp

  tokens = jax.ShapeDtypeStruct((rows, run.config.data.seq_len), jnp.int32)
  tokens = jax.ShapeDtypeStruct(tokens.shape, tokens.dtype, sharding=run.data_sharding)
  compiled = run.train_step().lower(
      run.abstract_state(), {"input_ids": tokens, "loss_mask": tokens}
  )
  compiled = compiled.compile()
  analysis = compiled.memory_analysis()
  peak = (
      analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
      + analysis.temp_size_in_bytes
      - analysis.alias_size_in_bytes
  )
  return peak, compiled


def device_limit_bytes(args) -> int | None:
  import jax

  if args.device_memory_gb is not None:
    return int(args.device_memory_gb * 1e9)
  stats = jax.devices()[0].memory_stats()
  return None if stats is None else stats.get("bytes_limit")


def probe_micro_batch(args) -> dict:
  """The largest power-of-two micro-batch whose compiled full-rank step fits (see module)."""
  from lowrank_jax.memory.measured import memory_run

  limit = device_limit_bytes(args)
  if limit is None:  # no memory statistics (CPU): take the whole global batch
    return {"micro_batch": args.global_batch, "limit_bytes": None}
  budget = args.memory_fraction * limit
  small, large = 1, 2
  peaks = {}
  for rows in (small, large):
    run = case_memory_run(args, rows, memory_run)
    peaks[rows], _ = compiled_bytes(run, args.global_batch)
  per_row = peaks[large] - peaks[small]
  chosen = 1
  while chosen * 2 <= args.global_batch and peaks[small] + (chosen * 2 - small) * per_row <= budget:
    chosen *= 2
  while chosen > 1:  # the extrapolation is checked by compiling the chosen size
    peak, _ = compiled_bytes(case_memory_run(args, chosen, memory_run), args.global_batch)
    if peak <= budget:
      break
    chosen //= 2
  return {"micro_batch": chosen, "limit_bytes": limit, "per_row_bytes": per_row}


def case_memory_run(args, micro_batch, memory_run):
  return memory_run(case(args, "full_rank", micro_batch))


def restart_counters_due(state, period: int):
  """``state`` with every restart counter one update before the end of its period."""
  import jax
  import jax.numpy as jnp

  from lowrank_jax.optim import PeriodicState

  def due(node):
    if isinstance(node, PeriodicState):
      return node._replace(count=jnp.full_like(node.count, period - 1))
    return node

  opt_state = jax.tree.map(due, state.opt_state, is_leaf=lambda n: isinstance(n, PeriodicState))
  return state._replace(opt_state=opt_state)


def measure_one(args, method: str, micro_batch: int) -> dict:
  """Compiles and times ``method``'s step in this process (see the module docstring)."""
  import jax
  import numpy as np

  from lowrank_jax.memory.analytic import PAPER_RANKS, analytic_memory
  from lowrank_jax.memory.measured import memory_run
  from lowrank_jax.train.state import init_train_state

  run = memory_run(case(args, method, micro_batch))
  start = time.perf_counter()
  estimate, step = compiled_bytes(run, args.global_batch)
  compile_s = time.perf_counter() - start

  ids = np.random.default_rng(0).integers(
      2, run.model_config.vocab_size, (args.global_batch, args.seq)
  )
  ids = jax.device_put(ids.astype(np.int32), run.data_sharding)
  batch = {"input_ids": ids, "loss_mask": jax.numpy.ones_like(ids)}

  def fresh():
    state = init_train_state(run.model_config, run.tx, run.mesh, seed=0)
    return restart_counters_due(state, args.gap) if method == "low_rank_restarts" else state

  def timed(state):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    return state, time.perf_counter() - start

  state, _ = timed(fresh())  # warm-up: the event step once, untimed
  del state
  state, event_s = timed(fresh())
  state, _ = timed(state)  # a steady step, untimed
  steady = []
  for _ in range(args.repeats):
    state, seconds = timed(state)
    steady.append(seconds)
  steady_s = statistics.median(steady)
  if args.profile_dir:
    with jax.profiler.trace(os.path.join(args.profile_dir, method)):
      state, _ = timed(state)
  period = 1 if method == "full_rank" else args.gap
  amortised_s = (event_s + (period - 1) * steady_s) / period if period > 1 else steady_s
  tokens = args.global_batch * args.seq
  device = jax.devices()[0]
  peak_flops = DENSE_BF16_PEAK.get(device.device_kind, CPU_NOMINAL_PEAK)
  stats = device.memory_stats() or {}
  analytic = analytic_memory(run.model_config, method, PAPER_RANKS[args.size])
  return {
      "method": method,
      "device": device.device_kind,
      "micro_batch": micro_batch,
      "grad_accum": args.global_batch // micro_batch,
      "compile_s": compile_s,
      "steady_s": steady_s,
      "event_s": event_s,
      "amortised_s": amortised_s,
      "tokens_per_s": tokens / amortised_s,
      "mfu": model_flops_per_token(run.model_config) * tokens / amortised_s / peak_flops,
      "peak_flops": peak_flops,
      "peak_bytes": stats.get("peak_bytes_in_use"),
      "compiled_estimate_bytes": estimate,
      "analytic_bytes": None if analytic is None else analytic.total_bytes,
      "final_loss": float(jax.device_get(step(state, batch)[1]["loss"])),
  }


def worker_argv(args, extra) -> list[str]:
  argv = [sys.executable, os.path.abspath(__file__), "--size", args.size, "--dtype", args.dtype]
  argv += ["--seq", str(args.seq), "--global-batch", str(args.global_batch)]
  argv += ["--gap", str(args.gap), "--repeats", str(args.repeats)]
  argv += ["--memory-fraction", str(args.memory_fraction)]
  if args.device_memory_gb is not None:
    argv += ["--device-memory-gb", str(args.device_memory_gb)]
  if args.profile_dir:
    argv += ["--profile-dir", args.profile_dir]
  return argv + (["--remat"] if args.remat else []) + extra


def in_worker(args, extra) -> dict:
  """Runs one worker process and returns the JSON of its last output line."""
  done = subprocess.run(worker_argv(args, extra), capture_output=True, text=True)
  if done.returncode:
    return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
  return json.loads(done.stdout.strip().splitlines()[-1])


def report(args, micro: dict, rows: list[dict]) -> None:
  """Prints and writes the table (see :func:`experiments.bench.timing.write_report`)."""
  from experiments.bench import timing

  full = next((r for r in rows if r["method"] == "full_rank" and "error" not in r), None)
  gb = lambda b: "-" if b is None else f"{b / 1e9:.1f}"
  table = []
  for r in rows:
    if "error" in r:
      table.append([r["method"], "failed: " + r["error"]] + ["-"] * 11)
      continue
    time_ratio = f"{r['amortised_s'] / full['amortised_s']:.3f}" if full else "-"
    memory_ratio = "-"
    if full and r["peak_bytes"] and full["peak_bytes"]:
      memory_ratio = f"{r['peak_bytes'] / full['peak_bytes']:.2f}"
    table.append(
        [
            r["method"],
            f"{r['micro_batch']} x {r['grad_accum']}",
            f"{r['compile_s']:.1f}",
            f"{r['steady_s'] * 1e3:.1f}",
            f"{r['event_s'] * 1e3:.1f}",
            f"{r['amortised_s'] * 1e3:.1f}",
            time_ratio,
            f"{r['tokens_per_s']:.0f}",
            f"{100 * r['mfu']:.1f}",
            gb(r["peak_bytes"]),
            gb(r["compiled_estimate_bytes"]),
            gb(r["analytic_bytes"]),
            memory_ratio,
        ]
    )
  measured = next((r for r in rows if "error" not in r), {})
  notes = [
      f"LLaMA {args.size}, {args.dtype}, sequence {args.seq}, global batch {args.global_batch}"
      f" (micro-batch x accumulation), remat {args.remat}, period T = {args.gap}.",
      f"Device: {measured.get('device', '?')}; MFU over {measured.get('peak_flops', 0) / 1e12:.0f}"
      " TFLOP/s (dense bf16 datasheet peak), model FLOPs 6N + 12Lds per token.",
      f"Micro-batch search: {micro}.",
  ]
  header = [
      "method",
      "micro x accum",
      "compile s",
      "steady ms",
      "event ms",
      "amortised ms",
      "/ full rank",
      "tokens/s",
      "MFU %",
      "peak GB",
      "compiled GB",
      "analytic GB",
      "peak / full rank",
  ]
  timing.write_report(
      args.name,
      "Train step at scale",
      notes,
      header,
      table,
      {"args": vars(args), "micro": micro, "rows": rows},
  )


def main(argv=None) -> None:
  args = parse_args(argv)
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # workers share the device in turn
  if args.probe:
    print(json.dumps(probe_micro_batch(args)))
    return
  if args.one:
    print(json.dumps(measure_one(args, args.one, args.micro_batch)))
    return
  micro = {"micro_batch": args.micro_batch} if args.micro_batch else in_worker(args, ["--probe"])
  print(f"micro-batch: {micro}", flush=True)
  if "error" in micro:
    sys.exit(f"the micro-batch probe failed: {micro['error']}")
  rows = []
  for method in args.methods:
    row = in_worker(args, ["--one", method, "--micro-batch", str(micro["micro_batch"])])
    row.setdefault("method", method)
    print(json.dumps(row), flush=True)
    rows.append(row)
  report(args, micro, rows)


if __name__ == "__main__":
  main()
