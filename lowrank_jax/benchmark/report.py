"""The grid's table (Markdown, CSV, JSON), its plots, and the paper's findings checked.

The paper's findings (paper.md, section 6) are checked against our own rows, per size:
full-rank has the lowest perplexity; the restarts improve Low-Rank and SLTrain; Fira is at
or below GaLore. Each check says whether it holds and by how much, next to the spread over
seeds, so a difference within noise reads as such.

>>> finding_line("Fira at or below GaLore", "fira", 30.0, 0.2, "galore", 31.0, 0.3)
'- Fira at or below GaLore: holds (fira 30.00 ± 0.20 vs galore 31.00 ± 0.30, difference 1.00)'
"""

from __future__ import annotations

import csv
import json
import math
import os

from lowrank_jax.benchmark.grid import Grid
from lowrank_jax.benchmark.results import MethodRow, method_rows

# (claim, method expected lower or equal, method expected higher)
PAPER_FINDINGS = (
    ("restarts improve Low-Rank", "low_rank_restarts", "low_rank"),
    ("restarts improve SLTrain", "sltrain_restarts", "sltrain"),
    ("Fira at or below GaLore", "fira", "galore"),
)
COLUMNS = (
    "size",
    "method",
    "learning_rate",
    "val_ppl_mean",
    "val_ppl_std",
    "val_ppl",
    "seeds",
    "state_mb",
    "tokens",
    "wall_time_s",
    "tokens_per_s",
)


def _shown(value, digits: int = 2) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def finding_line(
    claim: str, low: str, low_mean: float, low_std, high: str, high_mean: float, high_std
) -> str:
  verdict = "holds" if low_mean <= high_mean else "differs"
  spread = lambda std: f" ± {std:.2f}" if std is not None else ""
  return (
      f"- {claim}: {verdict} ({low} {low_mean:.2f}{spread(low_std)} vs {high} "
      f"{high_mean:.2f}{spread(high_std)}, difference {high_mean - low_mean:.2f})"
  )


def findings(rows: list[MethodRow]) -> list[str]:
  """The paper's findings, checked on ``rows`` size by size."""
  lines = []
  for size in dict.fromkeys(r.size for r in rows):
    ppl = {r.method: r.ppl() for r in rows if r.size == size}
    lines.append(f"{size}:")
    if "full_rank" in ppl and len(ppl) > 1:
      rival = min((m for m in ppl if m != "full_rank"), key=lambda m: ppl[m][0])
      lines.append(
          finding_line("full-rank is best", "full_rank", *ppl["full_rank"], rival, *ppl[rival])
      )
    for claim, low, high in PAPER_FINDINGS:
      if low in ppl and high in ppl:
        lines.append(finding_line(claim, low, *ppl[low], high, *ppl[high]))
  return lines


def table_rows(rows: list[MethodRow]) -> list[dict]:
  records = []
  for row in rows:
    record = row.as_dict()
    record["state_mb"] = record["state_bytes"] / 2**20
    records.append(record)
  return records


def markdown(records: list[dict], finding_lines: list[str]) -> str:
  header = (
      "| size | method | lr | val ppl (mean ± std) | per seed | state MiB | tokens | "
      "wall s | tokens/s |\n|---|---|---|---|---|---|---|---|---|\n"
  )
  body = "".join(
      f"| {r['size']} | {r['method']} | {r['learning_rate'] if r['learning_rate'] is not None else 'cfg'} "
      f"| {r['val_ppl_mean']:.2f}{' ± ' + _shown(r['val_ppl_std']) if r['val_ppl_std'] is not None else ''} "
      f"| {', '.join(f'{p:.2f}' for p in r['val_ppl'])} | {r['state_mb']:.2f} "
      f"| {r['tokens']:,.0f} | {r['wall_time_s']:.0f} | {r['tokens_per_s']:,.0f} |\n"
      for r in records
  )
  sweep = "\n### Learning-rate sweep (validation perplexity at the first seed)\n\n" + "".join(
      f"- {r['size']} {r['method']}: "
      + ", ".join(
          f"lr {rate}: {ppl:.2f}" if isinstance(ppl, float) else f"lr {rate}: {ppl}"
          for rate, ppl in r["sweep"].items()
      )
      + "\n"
      for r in records
  )
  return (
      header
      + body
      + sweep
      + "\n### The paper's findings, on these numbers\n\n"
      + "\n".join(finding_lines)
      + "\n"
  )


def write_report(grid: Grid, out_dir: str | None = None) -> list[str]:
  """Writes ``results.md``, ``results.csv``, ``results.json``, ``loss_curves.png`` and
  ``ppl_vs_memory.png`` under ``out_dir`` (default: the grid's); returns their paths."""
  from lowrank_jax.benchmark.plots import plot_loss_curves, plot_ppl_vs_memory

  out_dir = out_dir or grid.out_dir
  os.makedirs(out_dir, exist_ok=True)
  rows = method_rows(grid)
  records = table_rows(rows)
  finding_lines = findings(rows)
  paths = [
      os.path.join(out_dir, name)
      for name in (
          "results.md",
          "results.csv",
          "results.json",
          "loss_curves.png",
          "ppl_vs_memory.png",
      )
  ]
  with open(paths[0], "w") as f:
    f.write(markdown(records, finding_lines))
  with open(paths[1], "w", newline="") as f:
    writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in records:
      writer.writerow(
          {
              **record,
              "val_ppl": " ".join(f"{p:.4f}" for p in record["val_ppl"]),
              "seeds": " ".join(map(str, record["seeds"])),
          }
      )
  with open(paths[2], "w") as f:
    json.dump(
        {"rows": records, "findings": finding_lines},
        f,
        indent=2,
        default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x,
    )
  plot_loss_curves(rows, paths[3])
  plot_ppl_vs_memory(rows, paths[4])
  return paths
