"""The restarts taken apart: one table and one plot from the grids of experiments/grids/restarts/.

Each grid searches Low-Rank's and SLTrain's learning rate (seed 0, protocol A's 2x bracketing
rule) with one component of the restarts (arXiv 2505.22922, weight refactorization and momentum
reset) switched on or changed. Every row is read against the same method without restarts
(``baseline``), so its delta is what that component costs (positive) or gains (negative) in
validation perplexity at each variant's own best rate, against the baseline's mean over the
same seeds:

  python experiments/restarts_ablation.py experiments/results/restarts

writes ``ablation.md`` and ``ablation.png`` there. A variant whose grid has not finished shows
a dash until it has finished. A row with more seeds than seed 0 (the follow-up grids) shows
their mean and sample standard deviation, its bar the larger of the two rows' deviations.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics

import matplotlib.pyplot as plt

from table_output import write_table_and_plot

# (row label, grid directory, the grid's method for Low-Rank, for SLTrain)
VARIANTS = (
    ("no restarts", "baseline", "low_rank", "sltrain"),
    ("reset only (T = 40, R = 2)", "reset_only", "low_rank", "sltrain"),
    ("refactorization only (T = 40)", "refactorize_only", "low_rank", "sltrain"),
    ("both (T = 40, R = 2)", "baseline", "low_rank_restarts", "sltrain_restarts"),
    (
        "both, the paper's period (T = 200, R = 10)",
        "paper_period",
        "low_rank_restarts",
        "sltrain_restarts",
    ),
    ("no restarts, b2 = 0.95", "b2_095", "low_rank", "sltrain"),
    ("both (T = 40, R = 2), b2 = 0.95", "b2_095_restarts", "low_rank_restarts", "sltrain_restarts"),
)
FAMILIES = ("Low-Rank", "SLTrain")


def best_rows(results_dir: pathlib.Path) -> dict[tuple[str, str], dict]:
  """``(grid directory, method) -> its results.json row`` for every grid found."""
  rows = {}
  for path in sorted(results_dir.glob("*/results.json")):
    for row in json.loads(path.read_text())["rows"]:
      rows[(path.parent.name, row["method"])] = row
  return rows


def _delta(row: dict, reference: dict | None) -> float | None:
  """``row``'s mean perplexity minus ``reference``'s over the same seeds (``None`` where the
  reference lacks one of them): a seed-0 variant is read against seed 0 of no restarts."""
  if reference is None:
    return None
  by_seed = dict(zip(reference["seeds"], reference["val_ppl"], strict=True))
  if not set(row["seeds"]) <= set(by_seed):
    return None
  difference = row["val_ppl_mean"] - statistics.mean(by_seed[seed] for seed in row["seeds"])
  return round(difference, 9) + 0.0  # no "-0.00" for a row read against itself


def ablation(rows: dict[tuple[str, str], dict]) -> list[dict]:
  """One record per variant: per family, the best perplexity, its rate and its delta."""
  records = []
  for label, grid, *methods in VARIANTS:
    record = {"variant": label}
    for family, method, base in zip(FAMILIES, methods, ("low_rank", "sltrain")):
      row, reference = rows.get((grid, method)), rows.get(("baseline", base))
      if row is None:
        continue
      record[family] = {
          "ppl": row["val_ppl_mean"],
          "std": row["val_ppl_std"],
          "seeds": len(row["seeds"]),
          "lr": row["learning_rate"],
          "at_edge": row["lr_at_edge"],
          "delta": _delta(row, reference),
      }
    records.append(record)
  return records


def _cell(entry: dict | None) -> str:
  if entry is None:
    return "-"
  edge = ", at the edge" if entry["at_edge"] else ""
  delta = "" if entry["delta"] is None else f" ({entry['delta']:+.2f})"
  spread = f" ± {entry['std']:.2f} ({entry['seeds']} seeds)" if entry["seeds"] > 1 else ""
  return f"{entry['ppl']:.2f}{spread}{delta} at {entry['lr']:g}{edge}"


def markdown(records: list[dict]) -> str:
  lines = [
      "| variant | " + " | ".join(f"{f}: ppl (vs no restarts) at rate" for f in FAMILIES) + " |",
      "|---" * (1 + len(FAMILIES)) + "|",
  ]
  for record in records:
    lines.append(
        f"| {record['variant']} | " + " | ".join(_cell(record.get(f)) for f in FAMILIES) + " |"
    )
  return "\n".join(lines) + "\n"


def _noise(entry: dict, baseline: dict | None) -> float:
  """The larger sample deviation of a row and its baseline (0 for single seeds)."""
  return max(entry["std"] or 0.0, (baseline or {}).get("std") or 0.0)


def figure_of(records: list[dict]):
  figure, axis = plt.subplots(figsize=(8, 4.5))
  height = 0.38
  record_of_baseline = {family: records[0].get(family) for family in FAMILIES}  # no restarts
  for offset, family in enumerate(FAMILIES):
    bars = [
        (i + (offset - 0.5) * height, entry["delta"], _noise(entry, record_of_baseline[family]))
        for i, entry in enumerate(r.get(family) for r in records)
        if entry is not None and entry["delta"] is not None
    ]
    positions, deltas, noise = zip(*bars, strict=True) if bars else ((), (), ())
    axis.barh(positions, deltas, height=height, xerr=noise, capsize=2, label=family)
  axis.set_yticks(range(len(records)), [r["variant"] for r in records])
  axis.invert_yaxis()
  axis.axvline(0, color="black", linewidth=0.8)
  axis.set_xlabel("validation perplexity minus no restarts' (lower is better)")
  axis.set_title("The restarts taken apart\n(micro LLaMA, 2.6 tokens per parameter)")
  axis.legend()
  return figure


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results_dir", type=pathlib.Path)
  results_dir = parser.parse_args().results_dir
  records = ablation(best_rows(results_dir))
  write_table_and_plot(results_dir, "ablation", markdown(records), figure_of(records))


if __name__ == "__main__":
  main()
