"""Tokenizers: the embedded default (deterministic, cached), SentencePiece files, t5-base."""

import pickle
import re

import pytest

from lowrank_jax.data import DataConfig, check_vocab_fits, load_tokenizer, Tokenizer
from lowrank_jax.data import tokenizer_training
from lowrank_jax.data.sources import bible
from lowrank_jax.data.tokenizers import HuggingFaceTokenizer, SentencePieceTokenizer
from reference_packages import require

GENESIS = "In the beginning God created the heaven and the earth."


def _some_verses(count):
  return [verse for chapter in bible.chapter_verses("train")[:40] for verse in chapter][:count]


def test_training_is_deterministic_byte_for_byte():
  verses = _some_verses(600)
  assert tokenizer_training.train_sentencepiece(
      verses, vocab_size=300
  ) == tokenizer_training.train_sentencepiece(verses, vocab_size=300)


def test_training_depends_on_the_vocab_size():
  verses = _some_verses(600)
  small = SentencePieceTokenizer(tokenizer_training.train_sentencepiece(verses, vocab_size=250))
  large = SentencePieceTokenizer(tokenizer_training.train_sentencepiece(verses, vocab_size=300))
  assert (small.vocab_size, large.vocab_size) == (250, 300)


def test_impossible_vocab_size_is_named():
  with pytest.raises(ValueError, match=re.escape("vocab_size=5000 cannot be trained")):
    tokenizer_training.train_sentencepiece(_some_verses(50), vocab_size=5000)


def test_embedded_tokenizer_has_t5_special_ids(tokenizer):
  assert isinstance(tokenizer, Tokenizer)
  assert (tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id) == (8192, 0, 1)
  ids = tokenizer.encode(GENESIS)
  assert tokenizer.decode(ids) == GENESIS
  assert all(3 <= i < 8192 for i in ids)  # text never encodes to pad, eos or unk
  assert tokenizer.decode([*ids, tokenizer.eos_id, 0, 0]) == GENESIS


def test_embedded_model_is_cached_and_not_retrained(tokenizer_cache, tokenizer, monkeypatch):
  del tokenizer  # the session fixture has trained the default model into the cache
  cached = list(tokenizer_cache.glob("kjv-unigram-8192-*.model"))
  assert len(cached) == 1
  monkeypatch.setattr(
      tokenizer_training,
      "train_sentencepiece",
      lambda *args: pytest.fail("retrained a cached model"),
  )
  assert tokenizer_training.embedded_model_path(8192) == cached[0]


def test_a_cold_cache_trains_the_same_bytes(tokenizer_cache, tokenizer, tmp_path, monkeypatch):
  del tokenizer
  monkeypatch.setenv(tokenizer_training.CACHE_ENV, str(tmp_path))
  fresh = tokenizer_training.embedded_model_path(8192)
  assert fresh.parent == tmp_path
  assert fresh.read_bytes() == next(tokenizer_cache.glob("kjv-unigram-8192-*.model")).read_bytes()


def test_sentencepiece_file_loads_and_pickles(tokenizer_cache, tokenizer):
  path = next(tokenizer_cache.glob("*.model"))
  from_file = load_tokenizer(DataConfig(tokenizer=str(path)))
  assert from_file.encode(GENESIS) == tokenizer.encode(GENESIS)
  assert pickle.loads(pickle.dumps(from_file)).encode(GENESIS) == tokenizer.encode(GENESIS)


def test_missing_model_file_is_named(tmp_path):
  missing = str(tmp_path / "absent.model")
  with pytest.raises(ValueError, match=re.escape(f"tokenizer={missing!r} is not a file.")):
    load_tokenizer(DataConfig(tokenizer=missing))


def test_check_vocab_fits(tokenizer):
  check_vocab_fits(tokenizer, 8192)
  check_vocab_fits(tokenizer, 32000)
  with pytest.raises(ValueError, match="vocab_size=8192 does not fit the model's vocab_size=8191"):
    check_vocab_fits(tokenizer, 8191)


def test_hugging_face_adapter_matches_sentencepiece(tokenizer, reference_t5_tokenizer):
  adapter = HuggingFaceTokenizer(reference_t5_tokenizer)
  assert (adapter.vocab_size, adapter.pad_id, adapter.eos_id) == (8192, 0, 1)
  texts = [GENESIS, "Jesus wept.", "  odd   spacing, 1234 and ünïcödé"]
  for text in texts:
    assert adapter.encode(text) == tokenizer.encode(text)
  assert adapter.decode(tokenizer.encode(GENESIS) + [1]) == GENESIS


def test_t5_base_is_never_downloaded(monkeypatch, tmp_path):
  require("transformers")
  monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(ValueError, match=re.escape("tokenizer='t5-base' is not in the local")):
    load_tokenizer(DataConfig(tokenizer="t5-base"))


EDGE_CASES = [
    "  odd   spacing, 1234 and ünïcödé",
    "tab\tand\nnewline\n",
    " lead",
    "trail  ",
    "ﬁ ① Ⅻ",
]


def _auto_tokenizer(directory):
  """What a user of transformers alone loads from an exported directory (never downloading)."""
  transformers = require("transformers")
  return transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)


def test_an_exported_sentencepiece_model_encodes_as_sentencepiece_in_transformers(
    tokenizer, tmp_path
):
  tokenizer.save_pretrained(tmp_path)
  exported = _auto_tokenizer(tmp_path)
  assert (len(exported), exported.pad_token_id, exported.eos_token_id) == (8192, 0, 1)
  texts = [verse for chapter in bible.chapter_verses("validation") for verse in chapter][:2000]
  for text in texts + EDGE_CASES:
    assert exported.encode(text, add_special_tokens=False) == tokenizer.encode(text), text
  assert exported.decode(tokenizer.encode(GENESIS) + [1], skip_special_tokens=True) == GENESIS


def test_a_transformers_tokenizer_exports_its_own_files(reference_t5_tokenizer, tmp_path):
  HuggingFaceTokenizer(reference_t5_tokenizer).save_pretrained(tmp_path)
  exported = _auto_tokenizer(tmp_path)
  for text in [GENESIS, *EDGE_CASES]:
    assert exported.encode(text) == reference_t5_tokenizer.encode(text)


@pytest.mark.parametrize("where", ["directory", "tokenizer.json beside its config", "lone .json"])
def test_an_exported_tokenizer_loads_back_as_the_sentencepiece_original(tokenizer, tmp_path, where):
  require("transformers")
  tokenizer.save_pretrained(tmp_path / "export")
  lone = tmp_path / "lone" / "renamed.json"
  lone.parent.mkdir()
  lone.write_bytes((tmp_path / "export" / "tokenizer.json").read_bytes())
  path = {
      "directory": tmp_path / "export",
      "tokenizer.json beside its config": tmp_path / "export" / "tokenizer.json",
      "lone .json": lone,
  }[where]
  loaded = load_tokenizer(DataConfig(tokenizer=str(path)))
  assert (loaded.vocab_size, loaded.pad_id, loaded.eos_id) == (8192, 0, 1)
  texts = [verse for chapter in bible.chapter_verses("validation") for verse in chapter][:300]
  for text in texts + EDGE_CASES:
    assert loaded.encode(text) == tokenizer.encode(text), text
  assert loaded.decode(tokenizer.encode(GENESIS) + [1]) == GENESIS


def test_a_tokenizer_json_without_an_eos_is_named(tmp_path):
  tokenizers = require("tokenizers")
  bare = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]"))
  bare.save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(ValueError, match="names no EOS among its special tokens"):
    load_tokenizer(DataConfig(tokenizer=str(tmp_path / "tokenizer.json")))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no tokenizer.json there"):
    load_tokenizer(DataConfig(tokenizer=str(tmp_path / "empty")))
