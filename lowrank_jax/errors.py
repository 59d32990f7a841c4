"""The errors a ``lowrank-jax`` command reports, and the exit status each one gives.

A command never shows a traceback for the errors below: it prints one line on stderr,
``lowrank-jax: error: ...``, and exits with

- ``BAD_INPUT`` (2) for a :class:`ValueError` or :class:`FileNotFoundError`: the config, data,
  tokenizer, mesh, run directory or checkpoint cannot be used, found before anything is written;
- ``RUNTIME_FAILURE`` (1) for a :class:`FloatingPointError` or another :class:`OSError`: the run
  failed while training (too many non-finite steps in a row, a checkpoint that cannot be written)
  after keeping what it could.

``cli.main`` and the benchmark runner (which trains a grid's cells in its own process) both
report through :func:`report`, so a cell fails with the status ``lowrank-jax train`` would give.

>>> import io
>>> stream = io.StringIO()
>>> report(ValueError("optimizer.rank=0 must be positive"), stream)
2
>>> stream.getvalue()
'lowrank-jax: error: optimizer.rank=0 must be positive\\n'
>>> report(FloatingPointError("5 non-finite steps\\nin a row"), stream)
1
"""

from __future__ import annotations

import sys
from typing import TextIO

DONE = 0
RUNTIME_FAILURE = 1
BAD_INPUT = 2

BAD_INPUT_ERRORS = (ValueError, FileNotFoundError)
RUNTIME_ERRORS = (FloatingPointError, OSError)  # after BAD_INPUT_ERRORS: FileNotFoundError is one
REPORTED = BAD_INPUT_ERRORS + RUNTIME_ERRORS


def exit_status(error: BaseException) -> int:
  """The exit status for ``error``, one of :data:`REPORTED`."""
  if isinstance(error, BAD_INPUT_ERRORS):
    return BAD_INPUT
  if isinstance(error, RUNTIME_ERRORS):
    return RUNTIME_FAILURE
  raise TypeError(f"{type(error).__name__} is not a reported error; reported: {REPORTED}")


def report(error: BaseException, stream: TextIO | None = None) -> int:
  """Prints ``error`` as one line on ``stream`` (default stderr); returns its exit status."""
  status = exit_status(error)
  print(f"lowrank-jax: error: {' '.join(str(error).split())}", file=stream or sys.stderr)
  return status
