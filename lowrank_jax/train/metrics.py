"""Run records: JSONL metrics, TensorBoard events, the progress bar and the loss-curve plot.

Only the main process (``jax.process_index() == 0``) writes; the others get a logger that
does nothing, so the loop never branches on the process.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable

import tqdm


class MetricsLogger:
  """Appends ``{"step": s, **metrics}`` lines to ``path`` (and TensorBoard events to
  ``tensorboard_dir`` unless it is ``None``).

  ``purge_step``: a resumed run's first step; its events file starts with a session-start
  record at that step, which tells TensorBoard to drop the earlier files' events from that
  step on (the steps logged again), as ``metrics.jsonl`` is cut back.
  """

  def __init__(
      self,
      path: str,
      tensorboard_dir: str | None = None,
      enabled: bool = True,
      purge_step: int | None = None,
  ):
    self.enabled = enabled
    self.path = path
    self._writer = None
    if enabled and tensorboard_dir is not None:
      from tensorboardX import SummaryWriter  # no TensorFlow needed

      self._writer = SummaryWriter(tensorboard_dir, purge_step=purge_step)

  def log(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    if self._writer is not None:
      for name, value in metrics.items():
        self._writer.add_scalar(name, value, step)
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _shown(value) -> str:
  if isinstance(value, float):
    return f"{value:,.4g}"
  if isinstance(value, dict):  # e.g. the platform: "jax 0.10.2, backend cpu, ..."
    return ", ".join(f"{key} {item}" for key, item in value.items())
  return str(value)


def format_summary(summary: dict) -> str:
  """The end-of-run report: the summary's entries, then the validation perplexity against
  the unigram baseline when both were measured; for a learning-rate sweep, one line per
  copy instead, the best marked (with its dense leaves' rate where one differs)."""
  shown = {key: value for key, value in summary.items() if key != "copies"}
  width = max(map(len, shown))
  lines = ["", "summary"] + [f"  {key:<{width}}  {_shown(value)}" for key, value in shown.items()]
  copies = summary.get("copies", [])
  if copies and all("val_ppl" in copy for copy in copies):
    best = min(copies, key=lambda copy: copy["val_ppl"])
    grouped = any(
        c.get("dense_learning_rate", c["learning_rate"]) != c["learning_rate"] for c in copies
    )
    dense = lambda copy: f"{copy['dense_learning_rate']:<10g}  " if grouped else ""
    lines += [
        "",
        f"  learning rate  {'dense rate  ' * grouped}validation perplexity  skipped steps",
    ]
    lines += [
        f"  {copy['learning_rate']:<13g}  {dense(copy)}{copy['val_ppl']:<21.2f}  "
        f"{copy['skipped_steps']}" + ("  (best)" if copy is best else "")
        for copy in copies
    ]
  if "unigram_ppl" in summary:
    lines += [
        "",
        f"validation perplexity {summary['val_ppl']:.2f} against the unigram baseline "
        f"{summary['unigram_ppl']:.2f}",
    ]
  return "\n".join(lines) + "\n"


def read_metrics(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar over the steps showing loss, perplexity, tokens/s and the ETA."""

  def __init__(self, total: int, initial: int, enabled: bool = True):
    self._bar = tqdm.tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        smoothing=0.1,
    )

  def advance_to(self, step: int, loss: float, tokens_per_s: float):
    self._bar.set_postfix(
        loss=f"{loss:.3f}",
        ppl=f"{math.exp(min(loss, 50)):.1f}",
        tok_s=f"{tokens_per_s:,.0f}",
        refresh=False,
    )
    self._bar.update(step - self._bar.n)

  def write(self, message: str) -> None:
    self._bar.write(message)

  def close(self) -> None:
    self._bar.close()


def sparse_curve_markers(points: int) -> dict:
  """Line-plot keywords that mark each point of a curve of few points: a short run logs a
  handful of steps, and a line through a single point draws nothing."""
  return {"marker": "o", "markersize": 3} if points < 20 else {}


def plot_loss_curve(records: Iterable[dict], out_png: str, title: str = "") -> None:
  """Training loss (and validation loss where present) against step, saved as a PNG."""
  plot_loss_curves({"": records}, out_png, title)


def plot_loss_curves(curves: dict[str, Iterable[dict]], out_png: str, title: str = "") -> None:
  """The training (and validation) loss of every named record list, one figure: a
  learning-rate sweep's copies side by side."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, records in curves.items():
    records = list(records)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    prefix, color = (f"{name} " if name else ""), {}
    if train:
      line, *_ = ax.plot(
          *zip(*train),
          label=f"{prefix}train loss",
          linewidth=1,
          **sparse_curve_markers(len(train)),
      )
      if name:  # a copy's validation points take its training curve's colour
        color = {"color": line.get_color()}
    if val:
      ax.plot(*zip(*val), "o-", label=f"{prefix}validation loss", **color)
  ax.set_xlabel("step")
  ax.set_ylabel("cross-entropy (nats)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)
