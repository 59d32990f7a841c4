"""The linear kinds by name: what ``LinearConfig.kind`` may say and what builds each kind.

Each kind module registers its class when it is imported (the package's ``__init__`` imports
them all), so this file imports no kind and no kind imports the package: the registry is the
one place both sides meet.

>>> register_linear("my_dense", lambda *args, **kwargs: None)
>>> "my_dense" in registered_kinds(), needs_rank("my_dense")
(True, False)
>>> _FACTORIES.pop("my_dense") is not None
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import jax


class Linear(Protocol):
  """The interface every parameterization implements."""

  def __call__(self, x: jax.Array) -> jax.Array:
    ...

  def dense_kernel(self) -> jax.Array:
    ...

  def load_dense(self, kernel: jax.Array) -> None:
    ...


_FACTORIES: dict[str, Callable[..., Linear]] = {}
_NEEDS_RANK: set[str] = set()


def register_linear(kind: str, factory: Callable[..., Linear], *, needs_rank: bool = False) -> None:
  """Make ``LinearConfig(kind=kind)`` build its linears with ``factory``.

  ``factory(in_features, out_features, axes, *, init_std, param_dtype, compute_dtype, rngs,
  config)`` must return a module with the :class:`Linear` interface. With ``needs_rank``,
  a ``LinearConfig`` of this kind must set ``rank``.
  """
  _FACTORIES[kind] = factory
  if needs_rank:
    _NEEDS_RANK.add(kind)
  else:
    _NEEDS_RANK.discard(kind)


def registered_kinds() -> list[str]:
  """The kinds :func:`register_linear` knows, sorted."""
  return sorted(_FACTORIES)


def needs_rank(kind: str) -> bool:
  """Whether a ``LinearConfig`` of ``kind`` must set ``rank``."""
  return kind in _NEEDS_RANK


def linear_factory(kind: str) -> Callable[..., Linear]:
  """What builds a linear of the registered ``kind``."""
  return _FACTORIES[kind]
