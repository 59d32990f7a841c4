"""TFRecord files of ``tf.train.Example``s, read without TensorFlow.

tfds prepares C4 as TFRecord files by default. A TFRecord file is a sequence of records,
each framed as

    length: uint64 (little endian)    masked_crc32c(length): uint32
    data:   length bytes              masked_crc32c(data):   uint32

with ``masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)``, ``c`` the
CRC-32C (Castagnoli) of ``x``. Each ``data`` is a serialized ``tf.train.Example``, parsed
with the proto module tfds ships (``tensorflow_datasets.proto.tf_example_pb2``).

Every length's CRC is checked, so a torn or misaligned file fails at the first bad
frame. The data CRC is not: in pure Python it would cost more than tokenizing the
document, and a damaged payload almost always fails to parse or to decode as UTF-8.

Example:
  >>> from lowrank_jax.data.sources.tfrecord import crc32c
  >>> hex(crc32c(b"123456789"))  # the check value of RFC 3720, B.4
  '0xe3069283'
"""

from __future__ import annotations

from collections.abc import Iterator
import struct
from typing import BinaryIO

from tensorflow_datasets.proto import tf_example_pb2

_HEADER = struct.Struct("<QI")
_FOOTER_BYTES = 4
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> tuple[int, ...]:
  """The byte table of the reflected CRC-32C polynomial 0x82F63B78."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """The CRC-32C (Castagnoli) of ``data``."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: rotated right by 15 bits and offset, so CRCs of CRCs differ."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_frames(stream: BinaryIO, path: str) -> Iterator[tuple[bytes, int]]:
  """Yields each record's data and the byte offset just after it, from ``stream``'s position.

  Args:
    stream: a binary file positioned at the start of a record.
    path: the file's name, for errors.

  Raises:
    ValueError: a record is truncated or its length fails its CRC; the message names
      ``path`` and the record's byte offset.
  """
  offset = stream.tell()
  while header := stream.read(_HEADER.size):
    if len(header) < _HEADER.size:
      raise ValueError(
          f"path={path!r} is not a TFRecord file: it ends inside the record at byte {offset}."
      )
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
      raise ValueError(
          f"path={path!r} is not a TFRecord file: the record at byte {offset} fails its length CRC."
      )
    data = stream.read(length + _FOOTER_BYTES)
    if len(data) < length + _FOOTER_BYTES:
      raise ValueError(
          f"path={path!r} is not a TFRecord file: it ends inside the record at byte {offset}."
      )
    offset += _HEADER.size + len(data)
    yield data[:length], offset


def example_text(data: bytes, field: str) -> str:
  """The UTF-8 text of the bytes feature ``field`` of a serialized ``tf.train.Example``.

  Raises:
    KeyError: the example has no feature ``field`` (the message lists its features).
  """
  features = tf_example_pb2.Example.FromString(data).features.feature
  if field not in features:
    raise KeyError(f"its features are {sorted(features)}")
  return features[field].bytes_list.value[0].decode("utf-8")
