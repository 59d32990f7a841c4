"""The offline default tokenizer: a SentencePiece model trained on the embedded corpus.

The model is a unigram language model (t5-base's kind) with t5-base's special ids
(pad 0, eos 1, unk 2, no bos) and full character coverage, trained on the verses of
the *training* chapters only, so validation text never shapes the vocabulary.
Training is deterministic: one thread and a fixed input order give the same model
bytes for the same settings (several threads do not). It takes a few seconds (8,192
pieces: about 2-4 s on one core), so the model is cached as

    $LOWRANK_JAX_CACHE/kjv-unigram-<vocab_size>-<key>.model   (default ~/.cache/lowrank_jax)

where ``key`` hashes the corpus file, the trainer options and the sentencepiece
version: a change to any of them trains a new model instead of reusing a stale one.

Example:
  >>> from lowrank_jax.data.tokenizer_training import train_sentencepiece
  >>> import sentencepiece as spm
  >>> proto = train_sentencepiece(["the cat sat on the mat", "the dog sat"] * 50, vocab_size=16)
  >>> processor = spm.SentencePieceProcessor(model_proto=proto)
  >>> processor.get_piece_size(), processor.id_to_piece(0), processor.id_to_piece(1)
  (16, '<pad>', '</s>')
  >>> proto == train_sentencepiece(["the cat sat on the mat", "the dog sat"] * 50, vocab_size=16)
  True
"""

from __future__ import annotations

from collections.abc import Iterable
import hashlib
import io
import json
import os
import pathlib
import tempfile

import sentencepiece as spm

from lowrank_jax.data.sources import bible

CACHE_ENV = "LOWRANK_JAX_CACHE"
TRAINER_OPTIONS = {
    "model_type": "unigram",
    "pad_id": 0,
    "eos_id": 1,
    "unk_id": 2,
    "bos_id": -1,
    "character_coverage": 1.0,
    "num_threads": 1,
}


def cache_dir() -> pathlib.Path:
  """``$LOWRANK_JAX_CACHE`` if set, else ``~/.cache/lowrank_jax``."""
  return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "lowrank_jax")


def train_sentencepiece(sentences: Iterable[str], vocab_size: int) -> bytes:
  """Trains a SentencePiece model with :data:`TRAINER_OPTIONS` and returns its bytes.

  Args:
    sentences: training text, one sentence per item (SentencePiece skips items
      longer than 4,192 bytes, so feed sentences or verses, not whole documents).
    vocab_size: the number of pieces, special pieces included.

  Returns:
    The serialized model (what a ``.model`` file holds).
  """
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        minloglevel=2,
        **TRAINER_OPTIONS,
    )
  except RuntimeError as error:
    raise ValueError(f"vocab_size={vocab_size} cannot be trained on this text: {error}") from None
  return model.getvalue()


def _cache_key() -> str:
  digest = hashlib.sha256(bible.corpus_path().read_bytes())
  digest.update(json.dumps([TRAINER_OPTIONS, spm.__version__], sort_keys=True).encode())
  return digest.hexdigest()[:16]


def embedded_model_path(vocab_size: int) -> pathlib.Path:
  """Returns the cached embedded-corpus model with ``vocab_size`` pieces, training it once.

  The file is written under a temporary name and renamed, so concurrent processes
  never read a half-written model.

  Args:
    vocab_size: the number of pieces (at most about 10,000 on this corpus).
  """
  path = cache_dir() / f"kjv-unigram-{vocab_size}-{_cache_key()}.model"
  if not path.exists():
    verses = (verse for chapter in bible.chapter_verses("train") for verse in chapter)
    proto = train_sentencepiece(verses, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
      partial.write(proto)
    os.replace(partial.name, path)
  return path
