"""Orbax checkpoints of the train state and the data iterator, restored exactly.

A checkpoint is a ``Composite`` of the :class:`~lowrank_jax.train.state.TrainState`
(``StandardSave``; restored against an abstract target, so NamedTuple optimizer states
come back as NamedTuples and every array lands on its sharding) and the grain iterator
state. Saves are asynchronous; orbax writes each to a temporary directory and renames it
when complete, so a partial checkpoint is never restored.
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp

from lowrank_jax.data import checkpoint_restore_args, checkpoint_save_args
from lowrank_jax.train.config import CheckpointSection
from lowrank_jax.train.state import TrainState


class Checkpointer:
  """Keeps the newest ``section.keep`` checkpoints of a run under ``directory``."""

  def __init__(self, directory: str | os.PathLike, section: CheckpointSection):
    options = ocp.CheckpointManagerOptions(max_to_keep=section.keep,
                                           enable_async_checkpointing=section.async_save,
                                           create=True)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data: grain.DatasetIterator,
           meta: dict) -> bool:
    """Starts saving ``step`` (in the background when async); ``False`` if it exists.

    ``meta`` is a small JSON record kept beside the state (e.g. tokens seen).
    """
    if step in self.manager.all_steps():
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=checkpoint_save_args(data),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state: TrainState,
              data: grain.DatasetIterator | None = None) -> tuple[TrainState, dict]:
    """``(state, meta)`` of ``step``; ``data``, when given, moves to the saved position."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data is not None:
      items["data"] = checkpoint_restore_args(data)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
