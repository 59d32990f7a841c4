"""Documents from local text or JSON-lines files.

The files are read as :mod:`.shard_formats` reads shards: a ``.json``/``.jsonl`` file
(optionally ``.gz``) holds one JSON record per line and each record's ``text_field`` is
one document; a plain text file holds one document per non-empty line (the convention
of the Hugging Face ``text`` loader). Glob patterns are expanded and sorted, so the
order of documents is deterministic. The documents are held in memory, which suits the
corpora one keeps as a few local files; big corpora are streamed (:mod:`.shards`).

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

from lowrank_jax.data.sources.shard_formats import read_shard
from lowrank_jax.data.sources.shards import expand_paths


def read_documents(paths: Sequence[str], *, text_field: str) -> list[str]:
  """Reads every document of the given files, in order.

  Args:
    paths: file paths or glob patterns; each must match at least one file.
    text_field: the field of a ``.jsonl`` record that holds the document text.

  Returns:
    The documents, file after file (patterns expanded in sorted order).

  Raises:
    ValueError: a pattern matches nothing, a file holds no document or cannot be
      decoded, or a record lacks ``text_field``.
  """
  documents = []
  for path in expand_paths(paths):
    in_file = [text for text, _ in read_shard(path, offset=0, text_field=text_field)]
    if not in_file:
      raise ValueError(f"path={path!r} holds no document (the file is empty).")
    documents.extend(in_file)
  return documents
