"""The grid's table (Markdown, CSV, JSON), its plots, and the paper's findings checked.

Per ``(size, method)``: the chosen learning rate (marked when it sits at an edge of its
search, or when the grid gave it one rate and nothing was searched), the validation perplexity
as mean ± standard deviation over the seeds at that rate, every rate the search tried, and the
findings of :mod:`lowrank_jax.benchmark.findings`.

>>> rate_shown({"learning_rate": 0.01, "dense_learning_rate": None, "lr_at_edge": True,
...             "lr_searched": True})
'0.01 (edge)'
>>> rate_shown({"learning_rate": 0.01, "dense_learning_rate": None, "lr_at_edge": False,
...             "lr_searched": False})
'0.01 (one rate)'
>>> rate_shown({"learning_rate": 0.002, "dense_learning_rate": 0.008, "lr_at_edge": False,
...             "lr_searched": True})
'0.002, dense 0.008'
"""

from __future__ import annotations

import csv
import json
import math
import os

from lowrank_jax.benchmark.findings import finding_lines
from lowrank_jax.benchmark.grid import Grid
from lowrank_jax.benchmark.plots import plot_loss_curves, plot_ppl_vs_lr, plot_ppl_vs_memory
from lowrank_jax.benchmark.results import MethodRow, method_rows

COLUMNS = (
    "size",
    "method",
    "learning_rate",
    "dense_learning_rate",
    "lr_at_edge",
    "lr_searched",
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


def rate_shown(record: dict) -> str:
  """The chosen rate, ``cfg`` for the config's own, and the dense leaves' where they have
  one of their own, with ``(edge)`` when not bracketed and ``(one rate)`` when not searched."""
  rate, dense = record["learning_rate"], record["dense_learning_rate"]
  shown = ("cfg" if rate is None else f"{rate:g}") + ("" if dense is None else f", dense {dense:g}")
  if record["lr_at_edge"]:
    return shown + " (edge)"
  return shown + ("" if record["lr_searched"] else " (one rate)")


def table_rows(rows: list[MethodRow]) -> list[dict]:
  records = []
  for row in rows:
    record = row.as_dict()
    record["state_mb"] = record["state_bytes"] / 2**20
    records.append(record)
  return records


def markdown(records: list[dict], findings: list[str]) -> str:
  header = (
      "| size | method | lr | val ppl (mean ± std) | per seed | state MiB | tokens | "
      "wall s | tokens/s |\n|---|---|---|---|---|---|---|---|---|\n"
  )
  body = "".join(
      f"| {r['size']} | {r['method']} | {rate_shown(r)} "
      f"| {r['val_ppl_mean']:.2f}{' ± ' + _shown(r['val_ppl_std']) if r['val_ppl_std'] is not None else ''} "
      f"| {', '.join(f'{p:.2f}' for p in r['val_ppl'])} | {r['state_mb']:.2f} "
      f"| {r['tokens']:,.0f} | {r['wall_time_s']:.0f} | {r['tokens_per_s']:,.0f} |\n"
      for r in records
  )
  sweep = "\n### Learning-rate search (validation perplexity at the first seed)\n\n" + "".join(
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
      + "\n".join(findings)
      + "\n"
  )


def write_report(grid: Grid, out_dir: str | None = None) -> list[str]:
  """Writes ``results.md``, ``results.csv``, ``results.json``, ``loss_curves.png``,
  ``ppl_vs_memory.png`` and ``ppl_vs_lr.png`` under ``out_dir`` (default: the grid's);
  returns their paths."""
  out_dir = out_dir or grid.out_dir
  os.makedirs(out_dir, exist_ok=True)
  rows = method_rows(grid)
  records = table_rows(rows)
  findings = finding_lines(rows)
  paths = [
      os.path.join(out_dir, name)
      for name in (
          "results.md",
          "results.csv",
          "results.json",
          "loss_curves.png",
          "ppl_vs_memory.png",
          "ppl_vs_lr.png",
      )
  ]
  with open(paths[0], "w") as f:
    f.write(markdown(records, findings))
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
        {"rows": records, "findings": findings},
        f,
        indent=2,
        default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x,
    )
  plot_loss_curves(rows, paths[3])
  plot_ppl_vs_memory(rows, paths[4])
  plot_ppl_vs_lr(rows, paths[5])
  return paths
