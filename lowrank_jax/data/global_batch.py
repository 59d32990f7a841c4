"""Global batches across processes: who reads which rows, and how they become one array.

With ``P`` processes and a global batch of ``B`` rows, each process reads ``L = B / P``
rows per step (its part of the global batch, see :mod:`lowrank_jax.data.sources`) and
never the others'. ``jax.make_array_from_process_local_data`` then assembles the
processes' ``[L, S]`` arrays into one ``[B, S]`` ``jax.Array`` laid out by the
trainer's data sharding; without a sharding the local numpy batch is returned as is.

Example:
  >>> from lowrank_jax.data.global_batch import ProcessSlice
  >>> ProcessSlice.resolve(global_batch_size=512, process_index=1, process_count=4)
  ProcessSlice(index=1, count=4, local_batch_size=128)
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

Batch = dict[str, np.ndarray | jax.Array]


@dataclasses.dataclass(frozen=True)
class ProcessSlice:
  """This process's share of every global batch.

  Attributes:
    index: this process's rank, in ``[0, count)``.
    count: the number of processes feeding the global batch.
    local_batch_size: the rows this process reads per batch, ``B / count``.
  """

  index: int
  count: int
  local_batch_size: int

  @classmethod
  def resolve(
      cls,
      global_batch_size: int,
      process_index: int | None = None,
      process_count: int | None = None,
  ) -> ProcessSlice:
    """Checks the process layout; ``None`` means ``jax.process_index()``/``jax.process_count()``.

    Args:
      global_batch_size: rows per global batch; must divide by the process count.
      process_index: this process's rank.
      process_count: the number of processes.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_batch_size < 1:
      raise ValueError(f"global_batch_size={global_batch_size} must be a positive integer.")
    if count < 1 or not 0 <= index < count:
      raise ValueError(f"process_index={index} must lie in [0, process_count={count}).")
    if global_batch_size % count:
      raise ValueError(
          f"global_batch_size={global_batch_size} does not divide among process_count={count}"
          " processes."
      )
    return cls(index=index, count=count, local_batch_size=global_batch_size // count)


def to_global_batch(
    local_batch: Batch, sharding: jax.sharding.Sharding | None, global_batch_size: int
) -> Batch:
  """Assembles each process's local rows into global arrays laid out by ``sharding``.

  Args:
    local_batch: this process's ``{name: [L, ...]}`` numpy arrays.
    sharding: the trainer's data sharding of a ``[B, ...]`` batch, or ``None`` to
      keep the local numpy batch.
    global_batch_size: ``B``.

  Returns:
    ``{name: jax.Array[B, ...]}`` with ``sharding``, or ``local_batch`` itself.
  """
  if sharding is None:
    return local_batch
  return {
      name: jax.make_array_from_process_local_data(
          sharding, rows, global_shape=(global_batch_size, *rows.shape[1:])
      )
      for name, rows in local_batch.items()
  }
