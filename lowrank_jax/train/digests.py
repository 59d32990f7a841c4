"""SHA-256 digests of a committed checkpoint directory: flipped bytes and lost files show.

Orbax commits a checkpoint atomically (a temporary directory renamed when complete), but it
stores no checksums: a byte flipped on disk restores silently as wrong numbers. After a
save has committed, :func:`seal` writes ``digests.json`` into the step directory, mapping
every file's relative path to its size and SHA-256; :func:`verify` recomputes them before a
restore. The digest file is written to a temporary name and renamed, so it is whole or
absent; a directory without one (a process killed between the commit and the seal) is
*unsealed* and is restored unverified.

>>> import pathlib, tempfile
>>> step_dir = pathlib.Path(tempfile.mkdtemp())
>>> _ = (step_dir / "w.bin").write_bytes(b"weights")
>>> seal(step_dir)
>>> verify(step_dir)
True
>>> _ = (step_dir / "w.bin").write_bytes(b"weighTs")
>>> verify(step_dir)
Traceback (most recent call last):
...
ValueError: w.bin does not match its digest (bytes changed)
"""

from __future__ import annotations

import hashlib
import json
import os

DIGESTS = "digests.json"


def _files(step_dir: str | os.PathLike) -> list[str]:
  found = []
  for root, _, names in os.walk(step_dir):
    found += [os.path.relpath(os.path.join(root, n), step_dir) for n in names if n != DIGESTS]
  return sorted(found)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def seal(step_dir: str | os.PathLike) -> None:
  """Writes ``digests.json`` (``{path: [size, sha256]}``) for every file of ``step_dir``."""
  digests = {}
  for name in _files(step_dir):
    path = os.path.join(step_dir, name)
    digests[name] = [os.path.getsize(path), _sha256(path)]
  partial = os.path.join(step_dir, DIGESTS + ".tmp")
  with open(partial, "w") as f:
    json.dump(digests, f, indent=0)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, os.path.join(step_dir, DIGESTS))


def is_sealed(step_dir: str | os.PathLike) -> bool:
  return os.path.exists(os.path.join(step_dir, DIGESTS))


def verify(step_dir: str | os.PathLike) -> bool:
  """``True`` if every sealed file is present and unchanged, ``False`` if unsealed.

  Raises:
    ValueError: a file is missing, has another size or other bytes (names the file).
  """
  if not is_sealed(step_dir):
    return False
  with open(os.path.join(step_dir, DIGESTS)) as f:
    digests = json.load(f)
  for name, (size, sha256) in sorted(digests.items()):
    path = os.path.join(step_dir, name)
    if not os.path.exists(path):
      raise ValueError(f"{name} is missing")
    if os.path.getsize(path) != size:
      raise ValueError(f"{name} has {os.path.getsize(path)} bytes, {size} were saved")
    if _sha256(path) != sha256:
      raise ValueError(f"{name} does not match its digest (bytes changed)")
  return True
