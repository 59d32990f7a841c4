"""Each method's gap to full rank against the training budget, from protocol B and the grids of
experiments/grids/budget/.

The paper trains about 20 tokens per parameter (arXiv 2505.22922, experimental protocol); the
CPU protocol trains 2.6. This reads protocol B's six core methods at 2.6 tokens per parameter
(seed 0) and the same methods at 2x and 4x the steps and at 4x the batch, each at B's chosen
rates (full rank and APOLLO also at 8x the steps, the paper's budget), and reports per
budget: the validation perplexity, its gap to full rank's, the epochs over the embedded
corpus's training chapters and the train/validation gap (the last logged training loss against
the validation loss; a training loss is the mean over its logging window):

  python experiments/budget_gap.py experiments/results

writes ``budget/gap.md`` and ``budget/gap.png``. A budget whose grid has not finished is left
out of both.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import matplotlib.pyplot as plt

from table_output import write_table_and_plot

METHODS = ("full_rank", "galore", "fira", "apollo", "low_rank", "low_rank_restarts")
# (label, results directory under experiments/results, marker of its points)
BUDGETS = (
    ("1x (protocol B)", "cpu_protocol_b", "o"),
    ("2x steps", "budget/steps_2x", "o"),
    ("4x steps", "budget/steps_4x", "o"),
    ("8x steps", "budget/steps_8x", "o"),  # full rank and APOLLO only
    ("4x batch", "budget/batch_4x", "s"),
)


def training_tokens() -> int:
  """Tokens of the embedded corpus's training chapters under the grids' tokenizer."""
  from lowrank_jax.data import DataConfig, load_tokenizer
  from lowrank_jax.data.sources.bible import chapters

  tokenizer = load_tokenizer(
      DataConfig(source="embedded", tokenizer="embedded", vocab_size=1024, mode="packed")
  )
  return sum(len(tokenizer.encode(chapter)) for chapter in chapters("train"))


def _seed0_run(results_dir: pathlib.Path, row: dict) -> tuple[float, pathlib.Path]:
  """The seed-0 perplexity of a results.json ``row`` and its run's directory."""
  ppl = row["val_ppl"][row["seeds"].index(0)]
  runs = results_dir / "runs" / row["size"] / row["method"]
  dense = "" if row.get("dense_learning_rate") is None else f"_dense{row['dense_learning_rate']}"
  return ppl, runs / f"lr{row['learning_rate']}{dense}_seed0"


def _last_losses(run_dir: pathlib.Path) -> tuple[float, float]:
  """The last logged training loss and the validation loss of a run."""
  train = val = math.nan
  for line in (run_dir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    train = record.get("loss", train)
    val = record.get("val_loss", val)
  return train, val


def budget_records(root: pathlib.Path, corpus_tokens: int) -> list[dict]:
  records = []
  for label, directory, marker in BUDGETS:
    path = root / directory / "results.json"
    if not path.exists():
      continue
    rows = {row["method"]: row for row in json.loads(path.read_text())["rows"]}
    if "full_rank" not in rows:
      continue
    for method in METHODS:
      if method not in rows:
        continue
      row = rows[method]
      ppl, run_dir = _seed0_run(root / directory, row)
      train, val = _last_losses(run_dir)
      summary = json.loads((run_dir / "summary.json").read_text())
      records.append(
          {
              "budget": label,
              "marker": marker,
              "method": method,
              "lr": row["learning_rate"],
              "ppl": ppl,
              "parameters": summary["param_bytes"] / 4,
              "tokens": row["tokens"],
              "epochs": row["tokens"] / corpus_tokens,
              "train_val_gap": val - train,
          }
      )
  full_rank = {r["budget"]: r for r in records if r["method"] == "full_rank"}
  for record in records:
    # per parameter of the model (full rank's count), as the paper's budgets are
    record["tokens_per_parameter"] = record["tokens"] / full_rank[record["budget"]]["parameters"]
    record["gap"] = record["ppl"] - full_rank[record["budget"]]["ppl"]
  return records


def markdown(records: list[dict]) -> str:
  lines = [
      "| budget | tokens/param | epochs | method | rate | val ppl | gap to full rank |"
      " val - train loss |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in records:
    lines.append(
        f"| {r['budget']} | {r['tokens_per_parameter']:.1f} | {r['epochs']:.2f} | {r['method']} |"
        f" {r['lr']:g} | {r['ppl']:.2f} | {r['gap']:+.2f} | {r['train_val_gap']:+.3f} |"
    )
  return "\n".join(lines) + "\n"


def figure_of(records: list[dict]):
  figure, axis = plt.subplots(figsize=(8.5, 4.5))
  for index, method in enumerate(m for m in METHODS if m != "full_rank"):
    color = f"C{index}"
    steps = [r for r in records if r["method"] == method and r["marker"] == "o"]
    axis.plot(
        [r["tokens_per_parameter"] for r in steps],
        [r["gap"] for r in steps],
        marker="o",
        color=color,
        label=method,
    )
    for r in records:
      if r["method"] == method and r["marker"] == "s":
        axis.plot(r["tokens_per_parameter"], r["gap"], "s", color=color, fillstyle="none")
  axis.axhline(0, color="black", linewidth=0.8)
  axis.set_xscale("log")  # the budgets double
  ticks = sorted({r["tokens_per_parameter"] for r in records})
  axis.set_xticks(ticks, [f"{t:.1f}" for t in ticks])
  axis.minorticks_off()
  axis.set_xlabel("tokens per parameter (hollow squares: 4x batch)")
  axis.set_ylabel("validation perplexity minus full rank's")
  axis.set_title("Gap to full rank against the budget (micro LLaMA, seed 0)")
  axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
  return figure


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results_root", type=pathlib.Path)
  root = parser.parse_args().results_root
  records = budget_records(root, training_tokens())
  write_table_and_plot(root / "budget", "gap", markdown(records), figure_of(records))


if __name__ == "__main__":
  main()
