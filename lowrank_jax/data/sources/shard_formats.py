"""One shard file as a sequence of documents that can be re-entered at a saved offset.

The format follows the file's name:

* ``*.json``, ``*.jsonl`` (optionally ``.gz``): one JSON record per line, the document
  is its ``text_field`` (C4's ``c4-train.00000-of-01024.json.gz``);
* ``*.parquet``: the column ``text_field``, one document per row;
* ``*.tfrecord*`` (tfds' ``c4-train.tfrecord-00000-of-01024``): ``tf.train.Example``s
  whose bytes feature ``text_field`` is the document (:mod:`.tfrecord`);
* anything else (optionally ``.gz``): plain text, each non-empty line a document.

:func:`read_shard` yields every document with the offset just after it: a byte offset
in the (uncompressed) file, or a row index for parquet. Reading again from that offset
gives the documents that follow, so a stream's position within a shard is one integer.
Entering a plain or TFRecord file is a seek; a gzip file has no index and is
decompressed up to the offset, and parquet reads from the start of the offset's row
group, so the cost of entering a shard is bounded by the shard, never by how much of
the corpus was read before it. Paths may be local or ``gs://...`` (through
``etils.epath``; Cloud Storage needs ``pip install gcsfs``).

Every failure to read a shard is a one-line ``ValueError`` naming the file.

Example:
  >>> import gzip, pathlib, tempfile
  >>> from lowrank_jax.data.sources.shard_formats import read_shard
  >>> path = pathlib.Path(tempfile.mkdtemp()) / "c4-train.00000-of-01024.json.gz"
  >>> _ = path.write_bytes(gzip.compress(b'{"text": "one"}\\n{"text": "two"}\\n'))
  >>> list(read_shard(str(path), offset=0, text_field="text"))
  [('one', 16), ('two', 32)]
  >>> list(read_shard(str(path), offset=16, text_field="text"))
  [('two', 32)]
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import gzip
import json
from typing import BinaryIO
import zlib

from etils import epath
import pyarrow
import pyarrow.parquet

from lowrank_jax.data.sources import tfrecord


def shard_format(path: str) -> str:
  """The format of the shard at ``path``, from its name (see the module docstring)."""
  name = path.rsplit("/", 1)[-1].removesuffix(".gz")
  if name.endswith((".json", ".jsonl")):
    return "json lines"
  if name.endswith(".parquet"):
    return "parquet"
  if ".tfrecord" in name:
    return "tfrecord"
  return "text lines"


@contextlib.contextmanager
def _open(path: str) -> Iterator[BinaryIO]:
  """The file as a binary stream, decompressed if its name ends in ``.gz``."""
  try:
    with epath.Path(path).open("rb") as raw:
      yield gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
  except ImportError as error:  # epath's Cloud Storage backend without gcsfs
    raise ValueError(f"path={path!r} cannot be opened: {error} (pip install gcsfs).") from None


def _lines(stream: BinaryIO, offset: int) -> Iterator[tuple[bytes, int, int]]:
  """Each non-blank line, the byte offset where it starts and the offset just after it."""
  stream.seek(offset)
  for line in stream:
    start, offset = offset, offset + len(line)
    if line.strip():
      yield line, start, offset


def _json_lines(stream: BinaryIO, path: str, offset: int, field: str) -> Iterator[tuple[str, int]]:
  for line, start, end in _lines(stream, offset):
    try:
      record = json.loads(line)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
      raise ValueError(
          f"path={path!r} holds a line that is not JSON at byte {start}: {error}."
      ) from None
    if not isinstance(record, dict) or field not in record:
      fields = sorted(record) if isinstance(record, dict) else type(record).__name__
      raise ValueError(
          f"text_field={field!r} is missing from the record at byte {start} of {path!r};"
          f" its fields are {fields}."
      )
    yield record[field], end


def _text_lines(stream: BinaryIO, path: str, offset: int) -> Iterator[tuple[str, int]]:
  for line, start, end in _lines(stream, offset):
    try:
      yield line.decode("utf-8").rstrip("\r\n"), end
    except UnicodeDecodeError as error:
      raise ValueError(
          f"path={path!r} holds a line that is not UTF-8 at byte {start}: {error}."
      ) from None


def _tfrecords(stream: BinaryIO, path: str, offset: int, field: str) -> Iterator[tuple[str, int]]:
  stream.seek(offset)
  for data, end in tfrecord.read_frames(stream, path):
    try:
      yield tfrecord.example_text(data, field), end
    except KeyError as error:
      raise ValueError(
          f"text_field={field!r} is missing from the record ending at byte {end} of {path!r};"
          f" {error.args[0]}."
      )
    except Exception as error:  # protobuf's DecodeError, UnicodeDecodeError
      raise ValueError(
          f"path={path!r} holds a record that is not a tf.train.Example with UTF-8 text"
          f" {field!r}, ending at byte {end}: {error}."
      )


def _parquet_rows(
    stream: BinaryIO, path: str, offset: int, field: str
) -> Iterator[tuple[str, int]]:
  try:
    table = pyarrow.parquet.ParquetFile(stream)
  except pyarrow.ArrowException as error:
    raise ValueError(f"path={path!r} is not a parquet file: {error}.") from None
  if field not in table.schema_arrow.names:
    raise ValueError(
        f"text_field={field!r} is not a column of {path!r}; its columns are"
        f" {sorted(table.schema_arrow.names)}."
    )
  first_row = 0
  for group in range(table.num_row_groups):
    rows = table.metadata.row_group(group).num_rows
    if first_row + rows > offset:
      texts = table.read_row_group(group, columns=[field]).column(0).to_pylist()
      for row in range(max(offset - first_row, 0), rows):
        yield texts[row], first_row + row + 1
    first_row += rows


def read_shard(path: str, *, offset: int, text_field: str) -> Iterator[tuple[str, int]]:
  """Yields ``(document, offset after it)`` for the documents of ``path`` from ``offset``.

  Args:
    path: a shard file, local or ``gs://``; its format follows its name.
    offset: where to start: ``0``, or an offset this function yielded before.
    text_field: the JSON field, parquet column or Example feature holding the text.

  Raises:
    ValueError: the file cannot be read, is corrupt or truncated, or a record cannot be
      decoded or lacks ``text_field``; the message names the file.
  """
  kind = shard_format(path)
  try:
    with _open(path) as stream:
      if kind == "json lines":
        yield from _json_lines(stream, path, offset, text_field)
      elif kind == "text lines":
        yield from _text_lines(stream, path, offset)
      elif kind == "tfrecord":
        yield from _tfrecords(stream, path, offset, text_field)
      else:
        yield from _parquet_rows(stream, path, offset, text_field)
  except GeneratorExit:  # closed early; matched first, so nothing else is looked up then
    raise
  except (OSError, EOFError, zlib.error, pyarrow.ArrowException) as error:
    reason = " ".join(str(error).split()) or type(error).__name__
    raise ValueError(f"path={path!r} cannot be read as {kind}: {reason}.") from None
