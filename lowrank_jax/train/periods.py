"""Periods longer than the run: a warning at its start, since the event they time never comes.

``low_rank_restarts`` for 100 steps refactorizes and resets every 200 steps (its default):
zero times, and the run is plain ``low_rank`` without a word. Every period of the method
(refactorization, momentum reset or ReLoRA merge, the projector refresh, SPAM's and LoRO's
periods) is compared with ``schedule.total_steps``:

>>> from lowrank_jax.train.config import load_config
>>> config = load_config(overrides=["optimizer.method=low_rank_restarts",
...                                 "model.linear.rank=8", "schedule.total_steps=100"])
>>> print(*periods_past_the_run(config), sep="\\n")
optimizer.refactorize_every=200 (the method's default) exceeds schedule.total_steps=100: what it times never happens in this run
optimizer.reset_every=200 (the method's default) exceeds schedule.total_steps=100: what it times never happens in this run
"""

from __future__ import annotations

from lowrank_jax.train.config import TrainConfig


def periods_past_the_run(config: TrainConfig) -> list[str]:
  """One line per period of ``config``'s method that is longer than the run."""
  total = config.schedule.total_steps
  section = config.optimizer_section()
  periods = {
      f"optimizer.{name}": (getattr(section, name), getattr(config.optimizer, name) is None)
      for name in ("refactorize_every", "reset_every")
  }
  for name in section.options.periods:  # declared by the method's options class
    periods[f"optimizer.options.{name}"] = (
        getattr(section.options, name),
        name not in config.optimizer.options,
    )
  said = {False: "", True: " (the method's default)"}
  return [
      f"{key}={period}{said[default]} exceeds schedule.total_steps={total}: what it times "
      "never happens in this run"
      for key, (period, default) in periods.items()
      if period and period > total
  ]
