"""The experiments' table scripts on result sets made here, as their grids write them.

* ``restarts_ablation.py``: each variant's delta is its best perplexity minus the same
  method's without restarts over the same seeds, a dash where a grid has not finished, a
  mean ± std where a row has seeds beyond seed 0, and the edge named.
* ``budget_gap.py``: each method's gap to full rank per budget, the tokens per parameter from
  full rank's parameter count, the epochs over the corpus and the train/validation gap from the
  seed-0 run's metrics.
* ``protocols_side_by_side.py``: each method's perplexity under protocol B minus protocol A's,
  a dash for a method one protocol lacks, and each finding's verdict under both.
"""

import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments"))  # the scripts import their neighbours

import budget_gap  # noqa: E402


def row(method, ppls, lr, edge=False, dense=None, tokens=1_000_000, searched=True):
  """A results.json row as the benchmark report writes it."""
  return {
      "size": "micro",
      "method": method,
      "learning_rate": lr,
      "dense_learning_rate": dense,
      "seeds": list(range(len(ppls))),
      "val_ppl": ppls,
      "val_ppl_mean": statistics.mean(ppls),
      "val_ppl_std": statistics.stdev(ppls) if len(ppls) > 1 else None,
      "lr_at_edge": edge,
      "lr_searched": searched,
      "tokens": tokens,
  }


def write_results(directory, rows, findings=()):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "results.json").write_text(json.dumps({"rows": rows, "findings": list(findings)}))


def table_cells(path):
  """The body of a markdown table: a list of cells per row."""
  lines = path.read_text().splitlines()[2:]
  return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def run_script(name, argument):
  env = dict(os.environ, PYTHONPATH=ROOT)
  script = os.path.join(ROOT, "experiments", name)
  subprocess.run([sys.executable, script, str(argument)], check=True, env=env, capture_output=True)


def test_the_ablation_reads_each_variant_against_the_method_without_restarts(tmp_path):
  write_results(
      tmp_path / "baseline",
      [
          row("low_rank", [34.0, 35.0, 36.0], 0.003),
          row("sltrain", [32.0, 32.5, 33.0], 0.003),
          row("low_rank_restarts", [40.5], 0.006),
      ],
  )
  write_results(tmp_path / "reset_only", [row("low_rank", [41.25], 0.006, edge=True)])
  run_script("restarts_ablation.py", tmp_path)
  table = {cells[0]: cells[1:] for cells in table_cells(tmp_path / "ablation.md")}
  assert table["no restarts"] == [
      "35.00 ± 1.00 (3 seeds) (+0.00) at 0.003",
      "32.50 ± 0.50 (3 seeds) (+0.00) at 0.003",
  ]
  # a seed-0 variant is read against no restarts' seed 0 (34.0), not against its mean
  assert table["reset only (T = 40, R = 2)"] == ["41.25 (+7.25) at 0.006, at the edge", "-"]
  assert table["both (T = 40, R = 2)"] == ["40.50 (+6.50) at 0.006", "-"]
  assert table["refactorization only (T = 40)"] == ["-", "-"]
  assert (tmp_path / "ablation.png").stat().st_size > 0


def write_run(results_dir, method, lr, dense, losses, parameters):
  """A seed-0 run directory: its metrics (training losses, then the validation loss) and the
  summary's parameter bytes (fp32)."""
  name = f"lr{lr}" + ("" if dense is None else f"_dense{dense}") + "_seed0"
  run_dir = results_dir / "runs" / "micro" / method / name
  run_dir.mkdir(parents=True)
  train, val = losses
  records = [{"step": 50, "loss": train + 1.0}, {"step": 100, "loss": train}, {"val_loss": val}]
  (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  (run_dir / "summary.json").write_text(json.dumps({"param_bytes": 4 * parameters}))


@pytest.mark.parametrize("budget", ["cpu_protocol_b", "budget/steps_4x"])
def test_the_budget_gap_is_each_methods_perplexity_minus_full_ranks(tmp_path, budget):
  results_dir = tmp_path / budget
  tokens = 4_000_000
  write_results(
      results_dir,
      [
          row("full_rank", [30.0, 31.0], 0.001, dense=0.01, tokens=tokens),
          row("apollo", [29.0], 0.02, dense=0.01, tokens=tokens),
      ],
  )
  write_run(results_dir, "full_rank", 0.001, 0.01, (3.0, 3.4), parameters=400_000)
  write_run(results_dir, "apollo", 0.02, 0.01, (3.1, 3.35), parameters=250_000)
  run_script("budget_gap.py", tmp_path)
  cells = table_cells(tmp_path / "budget" / "gap.md")
  assert [c[3] for c in cells] == ["full_rank", "apollo"]
  # tokens per parameter from full rank's count; epochs over the corpus's training chapters
  epochs = f"{tokens / budget_gap.training_tokens():.2f}"
  assert {c[1] for c in cells} == {"10.0"} and {c[2] for c in cells} == {epochs}
  assert [c[5] for c in cells] == ["30.00", "29.00"]  # seed 0, not the mean
  assert [c[6] for c in cells] == ["+0.00", "-1.00"]
  assert [c[7] for c in cells] == ["+0.400", "+0.250"]
  assert (tmp_path / "budget" / "gap.png").stat().st_size > 0


def test_the_protocols_side_by_side_subtract_a_from_b_and_pair_the_verdicts(tmp_path):
  fira_finding = "- Fira at or below GaLore: {} (fira vs galore)"
  write_results(
      tmp_path / "cpu_protocol",
      [
          row("full_rank", [37.0, 38.0, 39.0], 0.002),
          row("fira", [30.0], 0.01, edge=True),
          row("low_rank", [40.0], 0.006, searched=False),
      ],
      findings=[
          "micro:",
          fira_finding.format("holds"),
          "- full rank best within one std: fails (x)",
      ],
  )
  write_results(
      tmp_path / "cpu_protocol_b",
      [row("full_rank", [30.5, 31.5], 0.001, dense=0.01), row("muon", [27.5], 0.004, dense=0.01)],
      findings=["micro:", fira_finding.format("fails"), "- learning rate at an edge: muon"],
  )
  run_script("protocols_side_by_side.py", tmp_path)
  out = tmp_path / "cpu_protocol_b" / "a_vs_b.md"
  methods, findings = out.read_text().split("\n\n")
  (out.parent / "methods.md").write_text(methods)
  (out.parent / "findings.md").write_text(findings)
  assert table_cells(out.parent / "methods.md") == [
      ["full_rank", "0.002", "38.00 ± 1.00", "0.001, dense 0.01", "31.00 ± 0.71", "-7.00"],
      ["muon", "-", "-", "0.004, dense 0.01", "27.50", "-"],
      ["fira", "0.01 (edge)", "30.00", "-", "-", "-"],
      ["low_rank", "0.006 (one rate)", "40.00", "-", "-", "-"],
  ]
  assert table_cells(out.parent / "findings.md") == [
      ["Fira at or below GaLore", "holds", "fails"],
      ["full rank best within one std", "fails", "-"],
  ]
  assert (out.parent / "a_vs_b.png").stat().st_size > 0
