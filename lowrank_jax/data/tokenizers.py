"""Tokenizers: the protocol the pipeline needs and the three ways to get one.

A tokenizer maps a document to token ids and back. The pipeline needs five things from
it (:class:`Tokenizer`): ``vocab_size`` (every id it can emit is below it), ``pad_id``,
``eos_id``, ``encode(text) -> list[int]`` (no special tokens added: the preprocessing
appends EOS itself) and ``decode(ids) -> str``.

:func:`load_tokenizer` resolves ``DataConfig.tokenizer``:

* ``'embedded'``: a SentencePiece unigram model trained on the embedded corpus and
  cached on disk (:mod:`lowrank_jax.data.tokenizer_training`); t5-base's ids for the
  special pieces: pad 0, eos 1, unk 2, no bos.
* ``'t5-base'``: the paper's tokenizer, through ``transformers.AutoTokenizer`` with
  ``local_files_only=True`` (nothing is downloaded). Its ``vocab_size`` counts the 100
  sentinel tokens ``<extra_id_*>`` (32,100), because a text that spells one out gets its
  id; a 32,000-row model should load t5-base's ``spiece.model`` by path instead, which
  cannot emit them.
* a path ending in ``.model``: any SentencePiece model.
* a Hugging Face tokenizer, offline: a directory holding ``tokenizer.json`` (as
  ``lowrank-jax export`` writes it, or a hub checkpoint's), or a ``tokenizer.json`` file,
  read beside its ``tokenizer_config.json`` if there is one. A lone ``tokenizer.json`` names
  no special tokens: its EOS is the first added special token among :data:`EOS_PIECES`. A
  tokenizer without a pad token (Llama 3, TinyLlama) pads with its EOS id: padded positions
  carry no loss, so any valid id serves.

Both kinds also ``save_pretrained(directory)`` for ``transformers.AutoTokenizer`` (what
``lowrank-jax export`` puts beside the weights); a SentencePiece model is converted to a
``tokenizer.json`` that encodes exactly as SentencePiece does.

Example:
  >>> from lowrank_jax.data.tokenizers import check_vocab_fits, load_tokenizer
  >>> from lowrank_jax.data.config import DataConfig, is_hugging_face_tokenizer_path
  >>> tokenizer = load_tokenizer(DataConfig(vocab_size=8192))
  >>> tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id
  (8192, 0, 1)
  >>> tokenizer.decode(tokenizer.encode("And God said, Let there be light"))
  'And God said, Let there be light'
  >>> check_vocab_fits(tokenizer, model_vocab_size=4096)
  Traceback (most recent call last):
  ...
  ValueError: tokenizer vocab_size=8192 does not fit the model's vocab_size=4096: ids up to 8191 would index past the embedding.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable
from collections.abc import Sequence

import sentencepiece as spm

from lowrank_jax.data.config import DataConfig, is_hugging_face_tokenizer_path
from lowrank_jax.data import tokenizer_training

T5_BASE = "t5-base"
HF_TOKENIZER_FILE = "tokenizer.json"
EOS_PIECES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")


@runtime_checkable
class Tokenizer(Protocol):
  """What the pipeline needs from a tokenizer."""

  @property
  def vocab_size(self) -> int:
    """One more than the largest id ``encode`` can return."""

  @property
  def pad_id(self) -> int:
    """The id that fills padded positions (they carry no loss)."""

  @property
  def eos_id(self) -> int:
    """The id appended after every document."""

  def encode(self, text: str) -> list[int]:
    """The ids of ``text``, without special tokens."""

  def decode(self, ids: Sequence[int]) -> str:
    """The text of ``ids``; special tokens are dropped."""


class SentencePieceTokenizer:
  """A SentencePiece model; pickles as its serialized bytes (for grain workers).

  A model without a pad piece pads with id 0: padded positions are masked out of the
  loss, so any valid id serves. A model without an EOS piece is refused.

  Args:
    model_proto: the serialized model (the bytes of a ``.model`` file).
  """

  def __init__(self, model_proto: bytes):
    self._model_proto = model_proto
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
    if self._processor.eos_id() < 0:
      raise ValueError(
          "this SentencePiece model has no EOS piece (eos_id=-1); the pipeline needs one."
      )

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
    """Loads a ``.model`` file."""
    if not os.path.isfile(path):
      raise ValueError(f"tokenizer={str(path)!r} is not a file.")
    with open(path, "rb") as model:
      proto = model.read()
    try:
      return cls(proto)
    except RuntimeError:  # SentencePiece's parse failure, an INTERNAL status
      raise ValueError(
          f"tokenizer={str(path)!r} is not a SentencePiece model (a .model file); data.tokenizer "
          "takes 'embedded', 't5-base' or the path of one"
      ) from None

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  @property
  def pad_id(self) -> int:
    return max(self._processor.pad_id(), 0)

  @property
  def eos_id(self) -> int:
    return self._processor.eos_id()

  def encode(self, text: str) -> list[int]:
    return self._processor.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self._processor.decode([int(i) for i in ids])

  def save_pretrained(self, directory: str | os.PathLike) -> None:
    """Writes the model as a ``transformers`` fast tokenizer (``tokenizer.json``): what
    ``AutoTokenizer.from_pretrained(directory)`` loads, offline, with the same ids."""
    transformers = _import_transformers("exporting a SentencePiece tokenizer")
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto.FromString(self._model_proto)
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    special = {
        name: self._processor.id_to_piece(index)
        for name, index in (
            ("pad_token", self._processor.pad_id()),
            ("eos_token", self.eos_id),
            ("unk_token", self._processor.unk_id()),
        )
        if index >= 0
    }
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=SpmConverter.build_tokenizer_from_spm_proto(proto, vocab),
        **special,
    ).save_pretrained(directory)

  def __getstate__(self) -> dict:
    return {"model_proto": self._model_proto}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["model_proto"])


class HuggingFaceTokenizer:
  """A ``transformers`` tokenizer behind the pipeline's protocol.

  Args:
    tokenizer: a loaded ``PreTrainedTokenizerBase`` with an EOS token (without a pad token
      it pads with the EOS id).
  """

  def __init__(self, tokenizer):
    if tokenizer.eos_token_id is None:
      raise ValueError(f"tokenizer {tokenizer.name_or_path!r} needs an eos token.")
    self._tokenizer = tokenizer

  @property
  def vocab_size(self) -> int:
    return len(self._tokenizer)

  @property
  def pad_id(self) -> int:
    pad = self._tokenizer.pad_token_id
    return self._tokenizer.eos_token_id if pad is None else pad

  @property
  def eos_id(self) -> int:
    return self._tokenizer.eos_token_id

  def encode(self, text: str) -> list[int]:
    return self._tokenizer.encode(text, add_special_tokens=False)

  def decode(self, ids: Sequence[int]) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def save_pretrained(self, directory: str | os.PathLike) -> None:
    """Writes the tokenizer's own files for ``AutoTokenizer.from_pretrained(directory)``."""
    self._tokenizer.save_pretrained(directory)


def _import_transformers(purpose: str, alternative: str = "pip install 'lowrank_jax[hf]'"):
  """The ``transformers`` module, or a ValueError naming what needs it."""
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(f"{purpose} needs the package 'transformers' ({alternative}).") from None
  return transformers


def _local_hugging_face_tokenizer(name: str) -> HuggingFaceTokenizer:
  transformers = _import_transformers(
      f"tokenizer={name!r}", "or pass the path of its SentencePiece .model file"
  )
  try:
    return HuggingFaceTokenizer(
        transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
    )
  except OSError:
    raise ValueError(
        f"tokenizer={name!r} is not in the local Hugging Face cache and is never downloaded"
        " here: fetch it once, or pass the path of its SentencePiece .model file."
    ) from None


def _hugging_face_tokenizer_files(path: str) -> HuggingFaceTokenizer:
  """The ``transformers`` fast tokenizer of a directory or a ``tokenizer.json``, offline."""
  transformers = _import_transformers(f"tokenizer={path!r}")
  directory = path if os.path.isdir(path) else os.path.dirname(path) or "."
  if not os.path.isfile(path if path.endswith(".json") else os.path.join(path, HF_TOKENIZER_FILE)):
    raise ValueError(f"tokenizer={path!r}: no {HF_TOKENIZER_FILE} there.")
  if os.path.isfile(os.path.join(directory, "tokenizer_config.json")) and (
      os.path.isdir(path) or os.path.basename(path) == HF_TOKENIZER_FILE
  ):
    return HuggingFaceTokenizer(
        transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    )
  try:
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=path)
  except Exception as error:  # the tokenizers library raises its own exception type
    reason = str(error).splitlines()[0]
    raise ValueError(
        f"tokenizer={path!r} is not a Hugging Face tokenizer.json ({reason})"
    ) from None
  special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
  eos = next((piece for piece in EOS_PIECES if piece in special), None)
  if eos is None:
    raise ValueError(
        f"tokenizer={path!r} names no EOS among its special tokens {sorted(special)[:5]};"
        f" expected one of {EOS_PIECES}, or pass its directory with tokenizer_config.json."
    )
  tokenizer.eos_token = eos
  if "<pad>" in special:
    tokenizer.pad_token = "<pad>"
  return HuggingFaceTokenizer(tokenizer)


def load_tokenizer(config: DataConfig) -> Tokenizer:
  """Returns the tokenizer named by ``config.tokenizer``.

  Args:
    config: its ``tokenizer`` is ``'embedded'`` (trained on first use with
      ``config.vocab_size`` pieces, then read from the cache), ``'t5-base'``, the
      path of a SentencePiece ``.model`` file, or a Hugging Face tokenizer directory or
      ``tokenizer.json``.

  Returns:
    A :class:`Tokenizer`.
  """
  if config.tokenizer == "embedded":
    return SentencePieceTokenizer.from_file(
        tokenizer_training.embedded_model_path(config.vocab_size)
    )
  if config.tokenizer == T5_BASE:
    return _local_hugging_face_tokenizer(T5_BASE)
  if is_hugging_face_tokenizer_path(config.tokenizer):
    return _hugging_face_tokenizer_files(config.tokenizer)
  return SentencePieceTokenizer.from_file(config.tokenizer)


def check_vocab_fits(tokenizer: Tokenizer, model_vocab_size: int) -> None:
  """Raises a ``ValueError`` unless every id of ``tokenizer`` indexes the model's embedding.

  Args:
    tokenizer: the tokenizer feeding the model.
    model_vocab_size: the number of rows of the model's embedding and lm_head.
  """
  if tokenizer.vocab_size > model_vocab_size:
    raise ValueError(
        f"tokenizer vocab_size={tokenizer.vocab_size} does not fit the model's"
        f" vocab_size={model_vocab_size}: ids up to {tokenizer.vocab_size - 1} would index"
        " past the embedding."
    )
