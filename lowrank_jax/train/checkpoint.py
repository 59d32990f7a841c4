"""Orbax checkpoints of the train state and the data iterator: restored exactly, or not at all.

A checkpoint is a ``Composite`` of the :class:`~lowrank_jax.train.state.TrainState`
(``StandardSave``; restored against an abstract target, so NamedTuple optimizer states
come back as NamedTuples and every array lands on its sharding), the grain iterator state
and a small JSON record. What can go wrong, and what happens:

* killed mid-save: orbax writes to ``<step>.orbax-checkpoint-tmp*`` and renames when
  complete, so a partial save is never listed; leftovers are removed when the next
  :class:`Checkpointer` opens the directory.
* bytes flipped or a file lost on disk: every committed save is sealed with SHA-256
  digests (:mod:`lowrank_jax.train.digests`; started by :meth:`Checkpointer.poll` within a
  step of the commit, hashed in a background thread) and verified before restoring; a bad one
  raises :class:`UnreadableCheckpoint` naming the step, and :meth:`Checkpointer.restore_newest`
  falls back to the next older one, moving (never deleting) the bad one aside.
* a sound checkpoint of another train state (a config edited by hand, a library whose
  optimizer state changed): the saved tree is compared with the restore target first, and
  :class:`CheckpointMismatch` names the differing leaves; nothing is moved, since the
  checkpoint is intact.
* disk full or an unwritable directory: :class:`CheckpointSaveError` names the step and
  the newest complete checkpoint, which is left untouched.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import contextlib
import logging
import os
import re
import shutil

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from lowrank_jax.data import checkpoint_restore_args, checkpoint_save_args
from lowrank_jax.train import digests, distributed
from lowrank_jax.train.config import CheckpointSection
from lowrank_jax.train.state import TrainState


def _leaf_shapes(tree) -> dict[str, tuple[int, ...]]:
  """``{"opt_state.0.mu.embed_tokens.value": shape}`` of a state or of its saved metadata
  (dict keys, sequence indices and NamedTuple fields all spelled the same)."""

  def name(key) -> str:
    for attribute in ("key", "idx", "name"):
      if hasattr(key, attribute):
        return str(getattr(key, attribute))
    return str(key)

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {".".join(map(name, path)): tuple(leaf.shape) for path, leaf in leaves}


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return (text[0] if text else type(error).__name__)[:300]


def _os_reason(error: BaseException) -> str:
  """``strerror (errno N)`` of an I/O failure (OSError or a tensorstore message), else its
  first line."""
  code = getattr(error, "errno", None)
  if code is None:
    found = re.search(r"os_error_code='(\d+)'", str(error))
    code = int(found.group(1)) if found else None
  return f"{os.strerror(code)} (errno {code})" if code else _first_line(error)


class _DropReadOnlyNotice(logging.Filter):
  """Drops orbax's "Given directory is read only" warning: it describes the manager's mode
  (``eval`` and ``export`` only restore), not the directory, which a user reads as a fault."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Given directory is read only")


@contextlib.contextmanager
def _without_read_only_notice():
  notice_filter, absl_logger = _DropReadOnlyNotice(), logging.getLogger("absl")
  absl_logger.addFilter(notice_filter)
  try:
    yield
  finally:
    absl_logger.removeFilter(notice_filter)


def _free_name(directory: str, name: str) -> str:
  """``directory/name``, or ``directory/name-2``, ``-3``, ... if taken (never inside an earlier
  one: a step set aside twice keeps both)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, name)
  for n in itertools.count(2):
    if not os.path.exists(path):
      return path
    path = os.path.join(directory, f"{name}-{n}")


class UnreadableCheckpoint(ValueError):
  """A checkpoint that fails its digests or its restore (names the step and directory)."""

  def __init__(self, step: int, path: str, reason: str):
    super().__init__(f"checkpoint step {step} ({path}) is unreadable: {reason}")
    self.step, self.path, self.reason = step, path, reason


class CheckpointMismatch(ValueError):
  """A sound checkpoint whose leaves (paths or shapes) differ from the restore target's."""


class CheckpointSaveError(OSError):
  """A save that could not be written (disk full, unwritable directory)."""


class Checkpointer:
  """Keeps the newest ``section.keep`` checkpoints of a run under ``directory``.

  Args:
    directory: the checkpoint directory (created if missing).
    section: how often and how many to keep, and whether saves are asynchronous.
    read_only: only restore (``eval``, ``export``): create nothing, remove nothing, not
      even the temporary directory of a save that a live run has in flight.
  """

  def __init__(
      self, directory: str | os.PathLike, section: CheckpointSection, read_only: bool = False
  ):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else section.keep,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=section.async_save,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
    )
    self.directory = os.path.abspath(directory)
    with _without_read_only_notice():
      self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._pending: int | None = None  # the step being saved
    self._sealing: tuple[int, concurrent.futures.Future] | None = None  # (step, its seal)
    self._sealer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="seal")

  def steps(self) -> list[int]:
    """The committed steps, newest first."""
    return sorted(self.manager.all_steps(), reverse=True)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _save_error(self, step: int, error: BaseException) -> CheckpointSaveError:
    complete = [s for s in self.steps() if s != step]
    kept = (
        f"the newest complete checkpoint, step {complete[0]}, is intact"
        if complete
        else "there is no earlier complete checkpoint"
    )
    return CheckpointSaveError(
        f"could not save checkpoint step {step} under {self.directory}: "
        f"{_os_reason(error)}; {kept}"
    )

  def save(self, step: int, state: TrainState, data: grain.DatasetIterator, meta: dict) -> bool:
    """Starts saving ``step`` (in the background when async); ``False`` if it exists.

    ``meta`` is a small JSON record kept beside the state (e.g. tokens seen).

    Raises:
      CheckpointSaveError: this save, or the previous one still in flight, failed.
    """
    self.wait()
    if step in self.manager.all_steps():
      return False
    try:
      started = self.manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=checkpoint_save_args(data),
              meta=ocp.args.JsonSave(meta),
          ),
          force=True,
      )
    except Exception as error:  # orbax reports I/O failures as ValueError, OSError, ...
      raise self._save_error(step, error) from None
    self._pending = step if started else None
    self.poll()
    return started

  def poll(self) -> None:
    """Starts sealing the save in flight once it has committed; cheap enough for every step."""
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self._seal_committed()

  def _seal_committed(self) -> None:
    """Waits for the save in flight, then seals it in the background (hashing releases the GIL)."""
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as error:
      raise self._save_error(step, error) from None
    if step is not None and jax.process_index() == 0:
      self._sealing = (step, self._sealer.submit(digests.seal, self.step_dir(step)))

  def wait(self) -> None:
    """Waits for the save in flight and for its seal.

    Raises:
      CheckpointSaveError: the save in flight, or its seal, failed.
    """
    self._seal_committed()
    if self._sealing is not None:
      (step, sealed), self._sealing = self._sealing, None
      try:
        sealed.result()
      except OSError as error:
        raise self._save_error(step, error) from None

  def _check_structure(self, step: int, abstract_state: TrainState) -> None:
    """Raises :class:`CheckpointMismatch` if the saved state has other leaves or shapes
    than ``abstract_state``, :class:`UnreadableCheckpoint` if its metadata is unreadable."""
    state_dir = epath.Path(self.step_dir(step)) / "state"
    try:
      saved = _leaf_shapes(ocp.StandardCheckpointHandler().metadata(state_dir))
    except Exception as error:
      raise UnreadableCheckpoint(step, self.step_dir(step), _first_line(error)) from None
    target = _leaf_shapes(abstract_state)
    differing = sorted(
        key for key in saved.keys() | target.keys() if saved.get(key) != target.get(key)
    )
    if differing:
      raise CheckpointMismatch(
          f"checkpoint step {step} ({self.step_dir(step)}) holds another train state than "
          f"the config builds ({len(differing)} leaves differ, e.g. {differing[0]}: "
          f"saved {saved.get(differing[0])}, expected {target.get(differing[0])}); it is "
          "left as it is: restore it with the config and library version that saved it"
      )

  def restore(
      self, step: int, abstract_state: TrainState, data: grain.DatasetIterator | None = None
  ) -> tuple[TrainState, dict]:
    """``(state, meta)`` of ``step``; ``data``, when given, moves to the saved position.

    Raises:
      UnreadableCheckpoint: the digests do not match or orbax cannot restore it.
      CheckpointMismatch: it is sound but holds another state than ``abstract_state``.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data is not None:
      items["data"] = checkpoint_restore_args(data)
    try:
      digests.verify(self.step_dir(step))
    except Exception as error:
      raise UnreadableCheckpoint(step, self.step_dir(step), _first_line(error)) from None
    self._check_structure(step, abstract_state)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:
      raise UnreadableCheckpoint(step, self.step_dir(step), _first_line(error)) from None
    return restored["state"], dict(restored["meta"])

  def restore_newest(
      self, abstract_state: TrainState, data: grain.DatasetIterator, set_aside: str, report=print
  ) -> tuple[int, TrainState, dict] | None:
    """``(step, state, meta)`` of the newest readable checkpoint, ``None`` if there is none.

    An unreadable checkpoint is reported and moved to ``set_aside/<step>`` (nothing is
    deleted), so that later saves and ``keep`` never mistake it for a good one; with several
    processes, process 0 moves it once all have given up on it. A sound one of another
    state raises :class:`CheckpointMismatch` and stays where it is.

    Args:
      abstract_state: the restore target (shapes, dtypes, shardings).
      data: the training iterator, moved to the restored position.
      set_aside: where unreadable checkpoints go.
      report: called with one line per unreadable checkpoint.
    """
    for step in self.steps():
      try:
        return (step, *self.restore(step, abstract_state, data))
      except UnreadableCheckpoint as error:
        distributed.barrier(f"unreadable checkpoint {step}")
        if jax.process_index() == 0:
          target = _free_name(set_aside, str(step))
          shutil.move(self.step_dir(step), target)
          report(f"{error}; moved it to {target}, trying the next older checkpoint")
        distributed.barrier(f"set aside checkpoint {step}")
        self.manager.reload()
    return None

  def newest_readable_before(self, step: int) -> int | None:
    """The newest step older than ``step`` whose digests verify (unsealed ones count)."""
    for older in self.steps():
      if older < step:
        try:
          digests.verify(self.step_dir(older))
          return older
        except ValueError:
          continue
    return None

  def close(self) -> None:
    self.wait()
    self._sealer.shutdown()
    self.manager.close()
