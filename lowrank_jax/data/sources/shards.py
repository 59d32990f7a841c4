"""Documents streamed from shard files (C4's json.gz, jsonl, text, parquet, TFRecord).

A corpus of ``N`` shard files (local or ``gs://``, formats in :mod:`.shard_formats`) is
read as a stream, never held in memory. Epoch ``e`` reads the shards in the order of
a permutation drawn from ``(seed, e)`` (the stored order without a seed). Reader ``r``
of ``R`` (``R`` = processes x grain workers per process; reader ``r = p + P w`` is
worker ``w`` of process ``p``) reads, from that epoch order,

* shards ``r, r + R, r + 2R, ...`` whole, when ``N >= R`` (sharded by file);
* otherwise shard ``r mod N``, keeping its records ``j`` with
  ``j = floor(r / N) (mod R_f)``, ``R_f`` the number of readers sharing that shard
  (sharded by record),

so the readers together read every record of an epoch once. Each reader then shuffles
its documents in windows (:mod:`.window_shuffle`). A reader's position is
``{"epoch", "shard", "offset", "record"}``: the shard's index in the reader's epoch
order, the offset within the shard file and the record's index there; a checkpoint
holds it, and resuming seeks to it, so a resume costs at most one window plus entering
one shard, wherever the stream stood.

Example:
  >>> import pathlib, tempfile
  >>> from lowrank_jax.data.sources.shards import ShardStream, expand_paths
  >>> from lowrank_jax.data.sources.window_shuffle import StreamReading
  >>> folder = pathlib.Path(tempfile.mkdtemp())
  >>> for shard in range(3):
  ...   _ = (folder / f"part-{shard}.txt").write_text(f"doc {shard}a\\ndoc {shard}b\\n")
  >>> reading = StreamReading(text_field="text", shuffle_seed=None, window=1, repeat=False,
  ...                         process_index=1, process_count=2)
  >>> list(ShardStream(expand_paths([str(folder / "part-*.txt")]), reading))
  ['doc 1a', 'doc 1b']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses

from etils import epath
import numpy as np

from lowrank_jax.data.sources.shard_formats import read_shard
from lowrank_jax.data.sources.window_shuffle import StreamReading, WindowShuffledStream

_GLOB_CHARACTERS = "*?["


def _expand(pattern: str) -> list[str]:
  """The files ``pattern`` names, sorted; a pattern without wildcards must exist."""
  parts = pattern.split("/")
  first_glob = next((i for i, part in enumerate(parts) if set(part) & set(_GLOB_CHARACTERS)), None)
  try:
    if first_glob is None:
      matches = [pattern] if epath.Path(pattern).is_file() else []
    else:
      root = epath.Path("/".join(parts[:first_glob]) or ("/" if first_glob else "."))
      matches = sorted(str(path) for path in root.glob("/".join(parts[first_glob:])))
  except ImportError as error:  # epath's Cloud Storage backend without gcsfs
    raise ValueError(f"path={pattern!r} cannot be listed: {error} (pip install gcsfs).") from None
  if not matches:
    raise ValueError(f"path={pattern!r} matches no file.")
  return matches


def expand_paths(patterns: Sequence[str]) -> tuple[str, ...]:
  """The files of every pattern, pattern after pattern (each sorted).

  Raises:
    ValueError: a pattern matches no file (the message names it).
  """
  return tuple(path for pattern in patterns for path in _expand(pattern))


@dataclasses.dataclass(frozen=True)
class _ReaderPart:
  """What one reader takes from the shards of an epoch (see the module docstring)."""

  index: int
  count: int

  def shards(self, num_shards: int) -> range:
    """Indices, in the epoch's shard order, of the shards this reader visits."""
    if num_shards >= self.count:
      return range(self.index, num_shards, self.count)
    return range(self.index % num_shards, self.index % num_shards + 1)

  def keeps(self, num_shards: int) -> tuple[int, int]:
    """``(first, stride)``: the reader keeps records ``j`` with ``j = first (mod stride)``."""
    if num_shards >= self.count:
      return 0, 1
    sharing = len(range(self.index % num_shards, self.count, num_shards))
    return self.index // num_shards, sharing


class _ShardReader:
  """One reader's documents, epoch after epoch, with a position to resume from."""

  def __init__(self, files: tuple[str, ...], reading: StreamReading, part: _ReaderPart, position):
    self._files, self._reading = files, reading
    self._part = part
    self._visits = part.shards(len(files))
    self._first, self._stride = part.keeps(len(files))
    position = position or {"epoch": 0, "shard": 0, "offset": 0, "record": 0}
    self._epoch, self._shard = position["epoch"], position["shard"]
    self._offset, self._record = position["offset"], position["record"]
    self._documents: Iterator[tuple[str, int]] | None = None
    self._returned_this_epoch = 0
    self._whole_epoch = self._shard == self._offset == 0  # read from the epoch's start

  def position(self) -> dict[str, int]:
    return {
        "epoch": self._epoch,
        "shard": self._shard,
        "offset": self._offset,
        "record": self._record,
    }

  def __iter__(self) -> _ShardReader:
    return self

  def _path(self) -> str:
    order = np.arange(len(self._files))
    if self._reading.shuffle_seed is not None:
      order = np.random.default_rng([self._reading.shuffle_seed, self._epoch]).permutation(order)
    return self._files[order[self._visits[self._shard]]]

  def _next_epoch(self) -> None:
    if not self._reading.repeat:
      raise StopIteration
    if self._whole_epoch and not self._returned_this_epoch:  # repeating would spin forever
      raise ValueError(
          f"the {len(self._files)} shards from {self._files[0]!r} on hold no document for"
          f" reader {self._part.index} of {self._part.count}."
      )
    self._epoch, self._shard, self._returned_this_epoch = self._epoch + 1, 0, 0
    self._whole_epoch = True

  def __next__(self) -> str:
    while True:
      if self._shard == len(self._visits):
        self._next_epoch()
      if self._documents is None:
        self._documents = read_shard(
            self._path(), offset=self._offset, text_field=self._reading.text_field
        )
      for text, offset in self._documents:
        self._offset = offset
        self._record += 1
        if (self._record - 1) % self._stride == self._first:
          self._returned_this_epoch += 1
          return text
      self._shard, self._offset, self._record, self._documents = self._shard + 1, 0, 0, None


class ShardStream(WindowShuffledStream):
  """A ``grain.IterDataset`` of the documents one process reads from shard files.

  Under ``mp_prefetch`` each grain worker becomes a reader of its own (grain calls
  :meth:`set_slice`).

  Args:
    files: the shard files (:func:`expand_paths` lists them from patterns).
    reading: how this process reads them.
  """

  def __init__(self, files: Sequence[str], reading: StreamReading):
    super().__init__(reading)
    self._files = tuple(files)
    self._part = _ReaderPart(reading.process_index, reading.process_count)

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    """Makes this copy grain worker ``sl.start`` of ``sl.step`` within this process."""
    del sequential_slice  # readers interleave by construction
    reading = self.reading
    self._part = _ReaderPart(
        reading.process_index + reading.process_count * sl.start, reading.process_count * sl.step
    )

  def open_reader(self, position: dict[str, int] | None) -> _ShardReader:
    return _ShardReader(self._files, self.reading, self._part, position)

  def reader_index(self) -> int:
    return self._part.index

  def __str__(self) -> str:
    return f"ShardStream({len(self._files)} files, reader {self._part.index} of {self._part.count})"
