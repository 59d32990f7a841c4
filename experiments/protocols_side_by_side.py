"""Protocol A and protocol B side by side: every method's chosen rate and validation perplexity
under both, and the paper's findings evaluated under both.

Protocol A (experiments/grids/cpu_protocol.yaml) trains each method with its references' tied
rate; protocol B (experiments/grids/cpu_protocol_b.yaml) gives every method's dense leaves
(embeddings, lm_head, norms) AdamW at one common rate and searches the matrix side's. Reading
one against the other separates what the dense leaves' rate did from what the method did
(arXiv 2505.22922, section 4, findings):

  python experiments/protocols_side_by_side.py experiments/results

writes ``cpu_protocol_b/a_vs_b.md`` and ``cpu_protocol_b/a_vs_b.png``. A method run under one
protocol only shows a dash for the other.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import matplotlib.pyplot as plt

from table_output import write_table_and_plot

from lowrank_jax.benchmark.report import rate_shown

# "- <finding>: <holds|fails> (<evidence>)", as lowrank_jax.benchmark.findings writes a verdict
VERDICT = re.compile(r"^- (?P<finding>.+?): (?P<verdict>holds|fails) \((?P<evidence>.*)\)$")


def read_protocol(path: pathlib.Path) -> tuple[dict[str, dict], dict[str, str]]:
  """``(method -> results.json row, finding -> verdict)`` of one protocol's results."""
  results = json.loads(path.read_text())
  rows = {row["method"]: row for row in results["rows"]}
  verdicts = {}
  for line in results.get("findings", []):
    match = VERDICT.match(line)
    if match:
      verdicts[match["finding"]] = match["verdict"]
  return rows, verdicts


def rate_cell(row: dict | None) -> str:
  return "-" if row is None else rate_shown(row)


def ppl_cell(row: dict | None) -> str:
  if row is None:
    return "-"
  std = row.get("val_ppl_std")
  return f"{row['val_ppl_mean']:.2f}" + ("" if std is None else f" ± {std:.2f}")


def markdown(a_rows: dict, b_rows: dict, a_verdicts: dict, b_verdicts: dict) -> str:
  """The rows in B's order (A's methods missing from B after them), then the findings."""
  methods = list(b_rows) + [m for m in a_rows if m not in b_rows]
  lines = [
      "| method | A: rate | A: val ppl | B: matrix rate | B: val ppl | B - A |",
      "|---|---|---|---|---|---|",
  ]
  for method in methods:
    a, b = a_rows.get(method), b_rows.get(method)
    delta = "-" if a is None or b is None else f"{b['val_ppl_mean'] - a['val_ppl_mean']:+.2f}"
    lines.append(
        f"| {method} | {rate_cell(a)} | {ppl_cell(a)} | {rate_cell(b)} | {ppl_cell(b)} | {delta} |"
    )
  lines += ["", "| finding (arXiv 2505.22922, section 4) | A | B |", "|---|---|---|"]
  for finding in list(b_verdicts) + [f for f in a_verdicts if f not in b_verdicts]:
    lines.append(f"| {finding} | {a_verdicts.get(finding, '-')} | {b_verdicts.get(finding, '-')} |")
  return "\n".join(lines) + "\n"


def figure_of(a_rows: dict, b_rows: dict):
  """One line per method from its A perplexity to its B perplexity, sorted by B's."""
  both = sorted(
      (m for m in b_rows if m in a_rows), key=lambda m: b_rows[m]["val_ppl_mean"], reverse=True
  )
  figure, axis = plt.subplots(figsize=(7, 0.35 * len(both) + 1.5))
  for y, method in enumerate(both):
    a, b = a_rows[method]["val_ppl_mean"], b_rows[method]["val_ppl_mean"]
    axis.plot([a, b], [y, y], color="0.6", linewidth=1.5, zorder=1)
  for protocol, rows, marker in (
      ("A: tied rates", a_rows, "o"),
      ("B: dense equalised", b_rows, "s"),
  ):
    axis.scatter(
        [rows[m]["val_ppl_mean"] for m in both], range(len(both)), marker=marker, label=protocol
    )
  axis.set_yticks(range(len(both)), both)
  axis.set_xlabel("validation perplexity (mean over seeds)")
  axis.set_title("Protocol A against B (micro LLaMA, 2.6 tokens per parameter)")
  axis.legend(fontsize=8)
  return figure


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results_root", type=pathlib.Path)
  root = parser.parse_args().results_root
  a_rows, a_verdicts = read_protocol(root / "cpu_protocol" / "results.json")
  b_rows, b_verdicts = read_protocol(root / "cpu_protocol_b" / "results.json")
  table = markdown(a_rows, b_rows, a_verdicts, b_verdicts)
  write_table_and_plot(root / "cpu_protocol_b", "a_vs_b", table, figure_of(a_rows, b_rows))


if __name__ == "__main__":
  main()
