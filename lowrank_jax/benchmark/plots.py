"""The grid's plots: loss curves per method, perplexity against memory and against learning rate.

One panel per model size (the learning-rate plot: one per size and method). Curves are the first seed at the chosen learning rate, smoothed
with a trailing mean over a few logged points; the memory axis is the bytes of the trained
state (parameters plus optimizer state), the perplexity the mean over seeds with its
standard deviation as an error bar. The learning-rate panels show the validation perplexity
of every rate a method's search ran (first seed; a failed run as a cross on the top edge) and,
at the chosen rate, the mean and standard deviation over seeds.
"""

from __future__ import annotations

import numpy as np

from lowrank_jax.benchmark.results import MethodRow
from lowrank_jax.train.metrics import sparse_curve_markers


def _figure(rows: list[MethodRow]):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  sizes = list(dict.fromkeys(r.size for r in rows)) or ["(no finished runs)"]
  fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 5), squeeze=False)
  return plt, fig, dict(zip(sizes, axes[0]))


def _styles(rows: list[MethodRow]) -> dict[str, dict]:
  """One colour and line style per method, the same in both plots (16 methods, 20 colours)."""
  import matplotlib

  methods = list(dict.fromkeys(r.method for r in rows))
  colours = matplotlib.colormaps["tab20"].colors
  return {
      m: {"color": colours[i % len(colours)], "linestyle": ("-", "--")[i // len(colours) % 2]}
      for i, m in enumerate(methods)
  }


def _smooth(values: np.ndarray, window: int = 3) -> np.ndarray:
  """Trailing mean over ``window`` points; a curve of fewer than ``4 * window`` points is
  kept as logged (smoothing would leave almost nothing of it)."""
  if len(values) < 4 * window:
    return values
  return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_curves_figure(rows: list[MethodRow]):
  """The figure of :func:`plot_loss_curves` (the caller closes it)."""
  _, fig, axes = _figure(rows)
  styles = _styles(rows)
  for row in rows:
    curve = np.asarray(row.runs[0].curve())
    if len(curve):
      smoothed = _smooth(curve[:, 1])
      axes[row.size].plot(
          curve[len(curve) - len(smoothed) :, 0],
          smoothed,
          label=row.method,
          linewidth=1.2,
          **styles[row.method],
          **sparse_curve_markers(len(smoothed)),
      )
  for size, ax in axes.items():
    ax.set(title=f"training loss, {size}", xlabel="step", ylabel="cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  return fig


def plot_loss_curves(rows: list[MethodRow], out_png: str) -> None:
  import matplotlib.pyplot as plt

  fig = loss_curves_figure(rows)
  fig.savefig(out_png, dpi=120)
  plt.close(fig)


def stacked_label_offsets(points: list[tuple[float, float]], near: float = 0.03) -> list[int]:
  """Vertical offsets (in points) of the points' labels: a label whose point lies within
  ``near`` of the spans of an earlier point goes one line lower, so close labels stack.

  >>> stacked_label_offsets([(1.0, 10.0), (1.0, 10.1), (2.0, 20.0), (1.0, 10.05)])
  [3, -6, 3, -15]
  """
  xs, ys = zip(*points, strict=True)
  x_span, y_span = (max(v) - min(v) or 1.0 for v in (xs, ys))
  offsets = []
  for index, (x, y) in enumerate(points):
    clashes = sum(
        abs(x - other_x) < near * x_span and abs(y - other_y) < near * y_span
        for other_x, other_y in points[:index]
    )
    offsets.append(3 - 9 * clashes)
  return offsets


def plot_ppl_vs_memory(rows: list[MethodRow], out_png: str) -> None:
  plt, fig, axes = _figure(rows)
  styles = _styles(rows)
  for size, ax in axes.items():
    sized = [row for row in rows if row.size == size]
    points = [(row.state_bytes / 2**20, row.ppl()) for row in sized]
    offsets = stacked_label_offsets([(memory, mean) for memory, (mean, _) in points])
    for row, (memory, (mean, std)), offset in zip(sized, points, offsets, strict=True):
      ax.errorbar(
          memory, mean, yerr=std or 0, fmt="o", capsize=3, color=styles[row.method]["color"]
      )
      ax.annotate(
          row.method, (memory, mean), fontsize=7, xytext=(4, offset), textcoords="offset points"
      )
    ax.set(
        title=f"validation perplexity against memory, {size}",
        xlabel="parameters + optimizer state (MiB)",
        ylabel="validation perplexity",
    )
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)


def plot_ppl_vs_lr(rows: list[MethodRow], out_png: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  columns = min(4, max(len(rows), 1))
  lines = max(1, -(-len(rows) // columns))
  fig, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 2.8 * lines), squeeze=False)
  for ax in axes.flat[len(rows) :]:
    ax.axis("off")
  for ax, row in zip(axes.flat, rows):
    runs = [r for r in row.sweep if r.cell.learning_rate is not None]
    dense_rates = sorted({r.cell.dense_learning_rate for r in runs}, key=lambda d: d or 0.0)
    for dense in dense_rates:  # one line per dense rate where it is searched too
      line = [r for r in runs if r.cell.dense_learning_rate == dense]
      done = [
          (r.cell.learning_rate, float(r.summary["val_ppl"])) for r in line if r.status == "done"
      ]
      label = f"dense {dense:g}" if len(dense_rates) > 1 else None
      if done:
        ax.plot(*zip(*done), "o-", markersize=4, label=label)
    if len(dense_rates) > 1:
      ax.legend(fontsize=6)
    failed = [r.cell.learning_rate for r in runs if r.status == "failed"]
    if failed:
      ax.plot(failed, [1.0] * len(failed), "x", color="tab:red", transform=ax.get_xaxis_transform())
    if row.learning_rate is not None:
      mean, std = row.ppl()
      ax.errorbar(row.learning_rate, mean, yerr=std or 0, fmt="s", color="tab:orange", capsize=3)
    ax.set_xscale("log")
    ticks = sorted({r.cell.learning_rate for r in runs})
    ax.set_xticks(ticks, [f"{rate:g}" for rate in ticks])
    ax.minorticks_off()
    edge = ", lr at edge" if row.at_edge else ""
    one_rate = "" if row.searched else ", one rate"
    ax.set_title(
        f"{row.method} ({row.size}{edge}{one_rate})",
        fontsize=9,
        color="tab:red" if edge else "black",
    )
    ax.set_xlabel("learning rate (target matrices)", fontsize=8)
    ax.set_ylabel("validation perplexity", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
