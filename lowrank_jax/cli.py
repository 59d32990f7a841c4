"""The ``lowrank-jax`` command.

    lowrank-jax train [--config FILE ...] [--accept-changes] [key=value ...]
                                                             train (or resume) a run
    lowrank-jax train run_dir=RUN_DIR [--accept-changes] [key=value ...]
                                                             continue RUN_DIR, keys changed
    lowrank-jax train --print-config [--config FILE ...] [key=value ...]
                                                             every key: value and meaning
    lowrank-jax eval --checkpoint RUN_DIR [--step N] [data.key=value ...]
                                                             validation perplexity
    lowrank-jax export --checkpoint RUN_DIR --out DIR        HF LlamaForCausalLM + tokenizer
    lowrank-jax memory [--sizes ...] [--methods ...] [--method-modules ...] [--dtype bf16]
                       [--devices 1 8] [--out DIR]
                                                             weights + optimizer memory table
    lowrank-jax memory --topology v5e:16x16 [--tensor N] [--hbm-gb G] [--sizes ...] [--methods ...]
                                                             the step compiled for a pod, per chip
    lowrank-jax benchmark GRID.yaml [--workers N] [--sweeps-as-one-program] [--emit-jobs FILE]
                        [--report-only] [key=value ...]
                                                             run a grid of runs, table + plots

``lowrank-jax train`` with no arguments trains the embedded default: the nano LLaMA on the
King James Bible with an offline tokenizer, in a few minutes on a CPU. A run directory that
holds a run continues it: its ``config.yaml`` is the base the files and ``key=value`` pairs
change, and a change is checked as :mod:`lowrank_jax.train.run_dir` says. A copy of a
learning-rate sweep, ``RUN_DIR/lr<rate>``, is a run for ``train``, ``eval`` and ``export``.
Flags and ``key=value`` pairs mix in any order.

Every error is one line on stderr, ``lowrank-jax: error: ...``, without a traceback. Bad
input (config, data, tokenizer, mesh, run directory, checkpoint) exits with status 2
before anything is written; a run that fails while training (a checkpoint that cannot be
written, too many non-finite steps in a row) exits with status 1 after keeping what it can
(``lowrank_jax.errors`` maps errors to these statuses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lowrank_jax import errors

# Each command imports what it runs when it runs: ``memory`` must set XLA_FLAGS before JAX
# starts (XLA reads them once), and ``--help`` or a bad argument answers without loading JAX.


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="lowrank-jax", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train or resume a run")
  train.add_argument(
      "--config",
      action="append",
      default=[],
      metavar="FILE",
      help="YAML config file; repeat to layer several (later ones win)",
  )
  train.add_argument(
      "--print-config",
      action="store_true",
      help="print the full resolved config as YAML, every key with its value and meaning "
      "(the chosen method's options included), and exit; it reads back with --config",
  )
  train.add_argument(
      "--accept-changes",
      action="store_true",
      help="continue the run in run_dir with a config that changes keys that may change "
      "mid-run (more steps, another eval, logging or checkpoint cadence, another mesh: "
      "lowrank_jax.train.run_dir.AMENDABLE), recorded in run_dir/config_history.jsonl; "
      "without it any change is refused, and other changes always are",
  )
  train.add_argument(
      "overrides",
      nargs="*",
      metavar="key=value",
      help="dotted config overrides, e.g. optimizer.method=galore",
  )
  for name, help_text in (
      ("eval", "validation perplexity of a checkpoint"),
      ("export", "write a checkpoint as HF LlamaForCausalLM with its tokenizer"),
  ):
    command = commands.add_parser(name, help=help_text)
    command.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_DIR",
        help="a run directory made by `lowrank-jax train`",
    )
    command.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    if name == "eval":
      command.add_argument(
          "overrides",
          nargs="*",
          metavar="key=value",
          help="data.* or eval.* keys to score other data, e.g. data.validation_paths=[f.txt]",
      )
    if name == "export":
      command.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory")
  memory = commands.add_parser("memory", help="analytic against measured memory, per method")
  memory.add_argument(
      "--sizes", nargs="+", default=["1b"], metavar="SIZE", help="model presets (nano ... 7b)"
  )
  memory.add_argument(
      "--methods", nargs="+", default=None, metavar="METHOD", help="training methods (default: all)"
  )
  memory.add_argument(
      "--method-modules",
      nargs="+",
      default=[],
      metavar="MODULE",
      help="Python modules to import first, whose import registers methods defined outside "
      "the package (as optimizer.method_modules does for train)",
  )
  memory.add_argument("--dtype", default="bf16", help="dtype policy: fp32, bf16 or mixed")
  memory.add_argument(
      "--devices",
      nargs="+",
      type=int,
      default=[1],
      metavar="N",
      help="mesh sizes, each fully fsdp (CPU: that many fake devices)",
  )
  memory.add_argument(
      "--no-compile",
      action="store_true",
      help="skip compiling the train step (state bytes only; fast)",
  )
  memory.add_argument(
      "--out",
      default=None,
      metavar="DIR",
      help="write memory.md, memory.csv and memory.png here (with --topology: "
      "topology.md and topology.csv)",
  )
  memory.add_argument(
      "--topology",
      default=None,
      metavar="NAME",
      help="compile each step for a described topology instead: v5e:16x16 "
      "(needs libtpu: the tpu-aot extra) or cpu:N; fails if out of memory",
  )
  memory.add_argument(
      "--tensor",
      type=int,
      default=1,
      metavar="N",
      help="with --topology: tensor-parallel width (the rest is fsdp)",
  )
  memory.add_argument(
      "--hbm-gb",
      type=float,
      default=None,
      metavar="G",
      help="with --topology: memory per device in GiB (default: the chip's)",
  )
  benchmark = commands.add_parser("benchmark", help="run a grid of methods x sizes x seeds")
  benchmark.add_argument("grid", metavar="GRID.yaml", help="a grid file (experiments/grids/)")
  benchmark.add_argument(
      "overrides", nargs="*", metavar="key=value", help="dotted config overrides for every cell"
  )
  benchmark.add_argument("--workers", type=int, default=1, help="cells run at the same time")
  benchmark.add_argument(
      "--no-pinning",
      action="store_true",
      help="let the workers' runs share every CPU (default: with --workers N on N or more "
      "CPUs, each worker keeps to its own block of them)",
  )
  benchmark.add_argument("--retry-failed", action="store_true", help="rerun failed cells")
  benchmark.add_argument(
      "--sweeps-as-one-program",
      action="store_true",
      help="train each round of a learning-rate search as one sweep (one process, one jitted "
      "step over a copy of the model per rate): for a GPU or TPU that one small run leaves "
      "idle; on a CPU, --workers 2 is faster (experiments/results/bench/sweep_bench.md)",
  )
  benchmark.add_argument(
      "--emit-jobs",
      default=None,
      metavar="FILE",
      help="write one `lowrank-jax train` command per unfinished cell of the "
      "current stage to FILE ('-': stdout) instead of running them",
  )
  benchmark.add_argument(
      "--report-only",
      action="store_true",
      help="only gather the finished cells into the table and plots",
  )
  benchmark.add_argument(
      "--out",
      default=None,
      metavar="DIR",
      help="write the table and plots here (default: the grid's out_dir)",
  )
  return parser


def _train(args) -> None:
  import jax

  from lowrank_jax.optim.linalg import single_threaded_lapack
  from lowrank_jax.train.commented_config import annotated_yaml
  from lowrank_jax.train.loop import train
  from lowrank_jax.train.metrics import format_summary
  from lowrank_jax.train.run_dir import requested_config

  single_threaded_lapack()  # this process is ours: LAPACK on one thread of XLA's pool
  config = requested_config(args.config, args.overrides)
  if args.print_config:
    print(annotated_yaml(config), end="")
    return
  summary = train(config, args.accept_changes)  # connects the processes first
  if jax.process_index():  # the other processes of a multi-host run print nothing
    return
  print(format_summary(summary), end="")


def _eval(args) -> None:
  from lowrank_jax.train.run import load_checkpoint

  run, state, step = load_checkpoint(args.checkpoint, args.step, args.overrides)
  print(json.dumps({"step": step, **run.evaluate(state)}))


def _export(args) -> None:
  from lowrank_jax.models.hf import export_hf
  from lowrank_jax.train.run import load_checkpoint

  run, state, step = load_checkpoint(args.checkpoint, args.step)
  try:
    export_hf(run.model(state), args.out, pad_id=run.tokenizer.pad_id, eos_id=run.tokenizer.eos_id)
    run.tokenizer.save_pretrained(args.out)
  except ImportError as error:  # the hf extra is missing: a setup to fix, not a crash
    raise ValueError(
        f"export needs the hf extra (pip install 'lowrank-jax[hf]'): {error}"
    ) from None
  print(f"exported step {step} of {args.checkpoint} (weights and tokenizer) to {args.out}")


def _default_xla_flag(name: str, value) -> None:
  """Adds ``--name=value`` to XLA_FLAGS unless they already name ``name``; before jax starts
  (XLA reads its flags once)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if name not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --{name}={value}"


def _use_fake_cpu_devices(count: int) -> None:
  """Asks for ``count`` fake CPU devices unless XLA_FLAGS names a count."""
  if count > 1:
    _default_xla_flag("xla_force_host_platform_device_count", count)


def _use_memory_minimising_cpu_schedule() -> None:
  """Turns off XLA's concurrency-optimised CPU schedule unless XLA_FLAGS name it.

  By default XLA's CPU backend schedules a program for thread concurrency, which keeps many
  independent temporaries alive at once (GaLore's per-matrix refresh buffers all together: 1b
  on one device, 17.3 GB of temporaries instead of 9.1). TPU and GPU schedulers bound memory,
  so a CPU compile measured as their proxy takes the memory-minimising schedule. XLA reads
  this flag from XLA_FLAGS only (compile options leave the schedule as it is).
  """
  _default_xla_flag("xla_cpu_enable_concurrency_optimized_scheduler", "false")


def _progress(index: int, count: int, description: str) -> None:
  """One line per case of the ``memory`` command, on stderr (stdout holds the table)."""
  print(f"[{index}/{count}] {description}", file=sys.stderr, flush=True)


def _import_method_modules(args) -> None:
  """Imports ``--method-modules``, after the XLA flags are set (a module may start JAX)."""
  from lowrank_jax.train.methods.registration import import_method_modules

  import_method_modules(args.method_modules, "--method-modules")


def _memory(args) -> None:
  _use_memory_minimising_cpu_schedule()
  if args.topology:
    _memory_on_topology(args)
    return
  _use_fake_cpu_devices(max(args.devices))
  _import_method_modules(args)
  from lowrank_jax.memory.report import default_methods, markdown_table, memory_rows, write_report

  rows = memory_rows(
      args.sizes,
      args.methods or default_methods(),
      args.dtype,
      args.devices,
      compile_step=not args.no_compile,
      on_case=_progress,
  )
  print(markdown_table(rows), end="")
  if args.out:
    print("wrote " + ", ".join(write_report(rows, args.out)))


def _memory_on_topology(args) -> None:
  kind, _, count = args.topology.partition(":")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this host only compiles
  if kind == "cpu" and count.isdigit():
    _use_fake_cpu_devices(int(count))
  _import_method_modules(args)
  from lowrank_jax.memory.report import default_methods, validate_cases
  from lowrank_jax.memory.topology import (
      GIB,
      compile_case,
      out_of_memory_message,
      topology_table,
      write_topology_report,
  )

  methods = args.methods or default_methods()
  validate_cases(args.sizes, methods, args.dtype, [])
  if args.hbm_gb is not None and args.hbm_gb <= 0:
    raise ValueError(f"--hbm-gb={args.hbm_gb} must be positive")
  hbm = None if args.hbm_gb is None else int(args.hbm_gb * GIB)
  cases = [(size, method) for size in args.sizes for method in methods]
  compiled = []
  for size, method in cases:
    _progress(len(compiled) + 1, len(cases), f"{size} {method} {args.dtype} on {args.topology}")
    compiled.append(compile_case(size, method, args.dtype, args.topology, args.tensor, hbm))
  print(topology_table(compiled), end="")
  if args.out:
    print("wrote " + ", ".join(write_topology_report(compiled, args.out)))
  failure = out_of_memory_message(compiled)
  if failure:
    raise ValueError(failure)


def _benchmark(args) -> None:
  from lowrank_jax.benchmark import Grid, job_lines, run_grid, write_report
  from lowrank_jax.benchmark.runner import use_compilation_cache
  from lowrank_jax.optim.linalg import single_threaded_lapack

  if args.workers < 1:
    raise ValueError(f"--workers={args.workers} must be a positive integer")
  grid = Grid.load(args.grid, args.overrides)
  if args.emit_jobs and args.sweeps_as_one_program:
    raise ValueError(
        "--sweeps-as-one-program runs the grid here; --emit-jobs writes one job a cell"
    )
  if args.emit_jobs:
    stage, lines = job_lines(grid)
    text = f"# {grid.out_dir}: {stage} stage, {len(lines)} jobs\n" + "".join(
        line + "\n" for line in lines
    )
    if args.emit_jobs == "-":
      print(text, end="")
    else:
      with open(args.emit_jobs, "w") as f:
        f.write(text)
      print(f"wrote {len(lines)} {stage} jobs to {args.emit_jobs}")
    return
  if not args.report_only:
    single_threaded_lapack()  # cells train in this process (one worker) or run `train`
    use_compilation_cache(os.path.join(grid.out_dir, "compilation_cache"))
    run_grid(grid, args.workers, args.retry_failed, args.sweeps_as_one_program, not args.no_pinning)
  paths = write_report(grid, args.out)
  with open(paths[0]) as f:
    print(f.read(), end="")
  print("wrote " + ", ".join(paths))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """The command's arguments, its flags and ``key=value`` pairs in any order.

  ``argparse`` mixes optionals and a ``nargs="*"`` positional only in
  ``parse_intermixed_args``, which a parser with subcommands refuses: the subcommand's own
  parser parses what follows its name.

  >>> parse_args(["train", "run_dir=g", "--accept-changes", "schedule.total_steps=14"]).overrides
  ['run_dir=g', 'schedule.total_steps=14']
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
  if not argv or argv[0] not in commands.choices:
    return parser.parse_args(argv)  # --help, or the error naming the commands
  args = commands.choices[argv[0]].parse_intermixed_args(argv[1:])
  args.command = argv[0]
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    {"train": _train, "eval": _eval, "export": _export, "memory": _memory, "benchmark": _benchmark}[
        args.command
    ](args)
  except errors.REPORTED as error:
    return errors.report(error)
  return errors.DONE


if __name__ == "__main__":
  sys.exit(main())
