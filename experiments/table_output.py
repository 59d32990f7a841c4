"""How the experiments' table scripts leave their results: a markdown table and a PNG."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_table_and_plot(out_dir: pathlib.Path, stem: str, table: str, figure) -> None:
  """Writes ``stem.md`` and ``stem.png`` into ``out_dir`` and prints the table."""
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / f"{stem}.md").write_text(table)
  figure.tight_layout()
  figure.savefig(out_dir / f"{stem}.png", dpi=120)
  plt.close(figure)
  print(table)
