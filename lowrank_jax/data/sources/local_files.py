"""Documents from local text or JSON-lines files.

A file whose name ends in ``.jsonl`` holds one JSON record per line and each record's
``text_field`` is one document. Any other file is plain text and each non-empty line
is one document (the convention of the Hugging Face ``text`` loader). Glob patterns
are expanded and sorted, so the order of documents is deterministic. The documents are
held in memory, which suits the corpora one keeps as local files; big corpora belong in
a tfds directory.

Example:
  >>> import pathlib, tempfile
  >>> from lowrank_jax.data.sources.local_files import read_documents
  >>> folder = pathlib.Path(tempfile.mkdtemp())
  >>> _ = (folder / "a.jsonl").write_text('{"text": "first"}\\n{"text": "second"}\\n')
  >>> _ = (folder / "b.txt").write_text("third\\n\\nfourth\\n")
  >>> read_documents([str(folder / "*")], text_field="text")
  ['first', 'second', 'third', 'fourth']
"""

from __future__ import annotations

from collections.abc import Sequence
import glob
import json


def _expand(pattern: str) -> list[str]:
  matches = sorted(glob.glob(pattern))
  if not matches:
    raise ValueError(f"path={pattern!r} matches no file.")
  return matches


def _read_file(path: str, text_field: str) -> list[str]:
  with open(path, encoding="utf-8") as lines:
    if not path.endswith(".jsonl"):
      return [line.rstrip("\n") for line in lines if line.strip()]
    documents = []
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      record = json.loads(line)
      if text_field not in record:
        raise ValueError(
            f"text_field={text_field!r} is missing from line {number} of {path!r};"
            f" its fields are {sorted(record)}."
        )
      documents.append(record[text_field])
    return documents


def read_documents(paths: Sequence[str], *, text_field: str) -> list[str]:
  """Reads every document of the given files, in order.

  Args:
    paths: file paths or glob patterns; each must match at least one file.
    text_field: the field of a ``.jsonl`` record that holds the document text.

  Returns:
    The documents, file after file (patterns expanded in sorted order).

  Raises:
    ValueError: a pattern matches nothing, a file holds no document, or a record
      lacks ``text_field``.
  """
  documents = []
  for pattern in paths:
    for path in _expand(pattern):
      in_file = _read_file(path, text_field)
      if not in_file:
        raise ValueError(f"path={path!r} holds no document (the file is empty).")
      documents.extend(in_file)
  return documents
