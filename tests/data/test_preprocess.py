"""Rows: paper mode (truncate, EOS, right-pad, mask) and packed mode (concatenate, cut)."""

import grain
import numpy as np
import pytest

from lowrank_jax.data.preprocess import document_rows, paper_row
from lowrank_jax.data.sources import bible


def _rows(texts, tokenizer, mode, seq_len, read_threads=1):
  rows = list(
      document_rows(
          grain.MapDataset.source(texts),
          tokenizer,
          mode=mode,
          seq_len=seq_len,
          read_threads=read_threads,
      )
  )
  return (
      np.stack([row["input_ids"] for row in rows]),
      np.stack([row["loss_mask"] for row in rows]),
  )


def test_paper_rows_by_hand(char_tokenizer):
  # a=3, b=4, ...; eos=1, pad=0; seq_len 6 keeps at most 5 text tokens and the EOS.
  input_ids, loss_mask = _rows(["abc", "abcde", "abcdefgh", ""], char_tokenizer, "paper", 6)
  np.testing.assert_array_equal(
      input_ids,
      [
          [3, 4, 5, 1, 0, 0],  # short: EOS, then padding
          [3, 4, 5, 6, 7, 1],  # exactly seq_len - 1 tokens: fills the row
          [3, 4, 5, 6, 7, 1],  # long: truncated to seq_len - 1, EOS kept
          [1, 0, 0, 0, 0, 0],  # empty document: just EOS
      ],
  )
  np.testing.assert_array_equal(
      loss_mask,
      [
          [1, 1, 1, 1, 0, 0],
          [1, 1, 1, 1, 1, 1],
          [1, 1, 1, 1, 1, 1],
          [1, 0, 0, 0, 0, 0],
      ],
  )
  assert input_ids.dtype == loss_mask.dtype == np.int32


def test_paper_row_pads_with_the_tokenizer_pad_id():
  row = paper_row([7, 8], seq_len=5, pad_id=9, eos_id=2)
  assert row["input_ids"].tolist() == [7, 8, 2, 9, 9]
  assert row["loss_mask"].tolist() == [1, 1, 1, 0, 0]


def test_paper_rows_match_the_references_hugging_face_call(tokenizer, reference_t5_tokenizer):
  """The references run `tokenizer(text, max_length=256, truncation=True, padding="max_length")`."""
  texts = bible.chapters("validation")[:6] + ["Jesus wept.", "", "Amen."]
  expected = reference_t5_tokenizer(texts, max_length=48, truncation=True, padding="max_length")
  input_ids, loss_mask = _rows(texts, tokenizer, "paper", 48)
  np.testing.assert_array_equal(input_ids, expected["input_ids"])
  np.testing.assert_array_equal(loss_mask, expected["attention_mask"])


def test_packed_rows_by_hand(char_tokenizer):
  # Stream: a b c E d E e f g h i j E k l E (E = eos = 1), cut every 4 tokens.
  input_ids, loss_mask = _rows(["abc", "d", "efghij", "kl"], char_tokenizer, "packed", 4)
  np.testing.assert_array_equal(
      input_ids, [[3, 4, 5, 1], [6, 1, 7, 8], [9, 10, 11, 12], [1, 13, 14, 1]]
  )
  np.testing.assert_array_equal(loss_mask, np.ones((4, 4)))


def test_packed_last_row_of_a_finite_stream_is_padded_and_masked(char_tokenizer):
  input_ids, loss_mask = _rows(["abc", "d"], char_tokenizer, "packed", 4)
  np.testing.assert_array_equal(input_ids, [[3, 4, 5, 1], [6, 1, 0, 0]])
  np.testing.assert_array_equal(loss_mask, [[1, 1, 1, 1], [1, 1, 0, 0]])


def test_packed_rows_waste_no_token_of_real_documents(tokenizer):
  texts = bible.chapters("validation")[:5]
  stream = np.concatenate([tokenizer.encode(text) + [tokenizer.eos_id] for text in texts])
  input_ids, loss_mask = _rows(texts, tokenizer, "packed", 64, read_threads=3)
  np.testing.assert_array_equal(input_ids.reshape(-1)[: len(stream)], stream)
  assert loss_mask.sum() == len(stream) and len(input_ids) == -(-len(stream) // 64)


def test_read_threads_do_not_change_the_order(tokenizer):
  texts = bible.chapters("validation")[:12]
  np.testing.assert_array_equal(
      _rows(texts, tokenizer, "paper", 32, read_threads=1)[0],
      _rows(texts, tokenizer, "paper", 32, read_threads=4)[0],
  )


@pytest.mark.parametrize(
    "mode, seq_len, message", [("stacked", 8, "mode='stacked'"), ("paper", 1, "seq_len=1")]
)
def test_bad_mode_or_length_is_named(char_tokenizer, mode, seq_len, message):
  with pytest.raises(ValueError, match=message):
    document_rows(grain.MapDataset.source(["a"]), char_tokenizer, mode=mode, seq_len=seq_len)
