"""The paper's memory count against the abstract train state, and its sharding over 8 devices."""

import dataclasses
import os
import subprocess
import sys

import pytest

from lowrank_jax.memory import report
from lowrank_jax.memory.report import case_config
from lowrank_jax.memory.analytic import FORMULAS, PAPER_RANKS, analytic_memory
from lowrank_jax.memory.measured import measure_state, measure_step, memory_run
from lowrank_jax.train.mesh import unsharded_large_arrays
from lowrank_jax.train.methods import METHODS


def _measured_and_analytic(method, size="nano", dtype="fp32", fsdp=1):
  config = case_config(size, method, dtype, devices=fsdp, fsdp=fsdp)
  return measure_state(memory_run(config)), analytic_memory(
      config.model_config(), method, PAPER_RANKS[size]
  )


@pytest.mark.parametrize("method", sorted(set(METHODS) & set(FORMULAS)))
def test_measured_state_bytes_equal_the_analytic_count_on_nano(method):
  measured, analytic = _measured_and_analytic(method)
  assert measured.weights == analytic.weight_bytes
  assert measured.optimizer == analytic.optimizer_bytes
  # What the count leaves out is a handful of scalars per matrix: under 0.5% of the state.
  assert 0 < measured.extras < 0.005 * measured.total


@pytest.mark.parametrize("method", ["full_rank", "galore", "low_rank", "lora", "sltrain"])
def test_the_count_follows_grouped_query_attention_and_tied_embeddings(method):
  config = case_config("nano", method, "fp32", devices=1, fsdp=1)
  overrides = {**config.model.overrides, "num_kv_heads": 1, "tie_word_embeddings": True}
  config = dataclasses.replace(config, model=dataclasses.replace(config.model, overrides=overrides))
  measured = measure_state(memory_run(config))
  analytic = analytic_memory(config.model_config(), method, PAPER_RANKS["nano"])
  assert measured.weights == analytic.weight_bytes
  assert measured.optimizer == analytic.optimizer_bytes


def test_the_1b_bf16_state_is_the_papers_headline_from_abstract_shapes():
  by_method = {
      m: _measured_and_analytic(m, "1b", "bf16")
      for m in ("full_rank", "galore", "low_rank_restarts")
  }
  for measured, analytic in by_method.values():
    assert measured.weights == analytic.weight_bytes
  gb = {m: a.total_bytes / 1e9 for m, (_, a) in by_method.items()}
  assert gb["full_rank"] == pytest.approx(8.0, abs=0.1)
  assert gb["galore"] == pytest.approx(4.8, abs=0.1)
  assert gb["low_rank_restarts"] == pytest.approx(3.7, abs=0.1)
  assert 0.20 < 1 - gb["low_rank_restarts"] / gb["galore"] < 0.30


# SLTrain keeps int(0.03 * in * out) nonzeros per matrix (491 at nano's 128 x 128, a prime):
# only the layer stack can split them, so these tests use a nano of 8 layers, which 8 divides.
EIGHT_LAYERS = ["model.overrides.num_layers=8"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_an_8_way_fsdp_mesh_puts_an_eighth_of_the_state_on_each_device(method):
  measured = measure_state(
      memory_run(case_config("nano", method, "fp32", devices=8, fsdp=8, overrides=EIGHT_LAYERS))
  )
  for total, per_device in (
      (measured.weights, measured.weights_per_device),
      (measured.optimizer, measured.optimizer_per_device),
  ):
    assert per_device == pytest.approx(total / 8, rel=0.05)


@pytest.mark.parametrize("fsdp, tensor", [(8, 1), (4, 2)])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_array_above_a_kilobyte_is_replicated(method, fsdp, tensor):
  run = memory_run(
      case_config(
          "nano", method, "fp32", devices=8, fsdp=fsdp, tensor=tensor, overrides=EIGHT_LAYERS
      )
  )
  assert dict(run.mesh.shape) == {"data": 1, "fsdp": fsdp, "tensor": tensor}
  assert unsharded_large_arrays(run.shardings, run.abstract_state(), 1024) == []


def test_a_method_without_a_formula_is_reported_as_n_a(monkeypatch):
  monkeypatch.setitem(METHODS, "low_rank", dataclasses.replace(METHODS["low_rank"], memory=None))
  (row,) = report.memory_rows(["nano"], ["low_rank"], "fp32", [1], compile_step=False)
  assert row.analytic is None and row.state is not None
  assert "| n/a |" in report.markdown_table([row])


def test_the_default_methods_are_every_method_once():
  methods = report.default_methods()
  for i, name in enumerate(methods):
    assert all(METHODS[name] != METHODS[other] for other in methods[i + 1 :]), name
  for name in METHODS:  # a name left out trains as one that stays
    assert any(METHODS[name] == METHODS[kept] for kept in methods), name
  assert "full_rank" in methods  # the paper's name, not its alias adamw


def test_the_report_cites_the_paper(tmp_path):
  rows = report.memory_rows(["nano"], ["full_rank"], "bf16", [1], compile_step=False)
  with open(report.write_report(rows, str(tmp_path))[0]) as f:
    title = f.readline()
  assert "arXiv 2505.22922, memory accounting" in title


def test_the_memory_command_prints_the_table_and_fails_in_one_line(capsys):
  from lowrank_jax.cli import main

  assert main(["memory", "--sizes", "nano", "--methods", "full_rank", "--no-compile"]) == 0
  assert "| nano | bf16 | 1 | full_rank |" in capsys.readouterr().out
  assert main(["memory", "--sizes", "huge"]) == 2
  assert capsys.readouterr().err.startswith("lowrank-jax: error: size 'huge' is unknown")


def test_the_memory_command_shows_each_method_once_with_a_progress_line_per_case(capsys):
  from lowrank_jax.cli import main

  assert main(["memory", "--sizes", "nano", "--no-compile"]) == 0
  out, err = capsys.readouterr()
  shown = [line.split("|")[4].strip() for line in out.splitlines() if line.startswith("| nano |")]
  assert shown == report.default_methods()
  count = len(shown)
  assert err.splitlines() == [
      f"[{i}/{count}] nano {method} bf16 on 1 device(s)" for i, method in enumerate(shown, 1)
  ]


def test_fsdp_activations_stay_split_by_batch_in_the_compiled_step():
  # 8 sequences per data-parallel device: one device holds 8 rows, each of 8 devices holds 8
  # of 64. With the activations split by batch, a device of the 8 needs about the temporaries
  # of the single device (plus gathered weights); gathered batches would need several times.
  single, spread = (
      measure_step(
          memory_run(case_config("nano", "full_rank", "fp32", devices=n, fsdp=n, seq_len=128)),
          rows_per_device=8,
      ).temporary
      for n in (1, 8)
  )
  assert spread < 1.5 * single, (spread, single)


def _temporary_gb_of_the_command(xla_flags: str) -> float:
  """nano GaLore's step temporaries as the ``memory`` command reports them, in a fresh process
  (XLA reads its flags once, when jax starts)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "lowrank_jax",
          "memory",
          "--sizes",
          "nano",
          "--methods",
          "galore",
          "--dtype",
          "fp32",
      ],
      env=env,
      check=True,
      capture_output=True,
      text=True,
  ).stdout
  row = next(line for line in out.splitlines() if line.startswith("| nano |"))
  return float(row.strip("|").split("|")[-1])


def test_the_memory_command_compiles_with_the_memory_minimising_cpu_schedule():
  """Unless XLA_FLAGS names the scheduler, the command turns XLA's concurrency-optimised CPU
  schedule off: it holds more temporaries at once than a TPU or GPU schedule would."""
  concurrent = _temporary_gb_of_the_command("--xla_cpu_enable_concurrency_optimized_scheduler=true")
  assert _temporary_gb_of_the_command("") < concurrent
