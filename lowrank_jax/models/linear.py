"""The linear layer as a swappable parameterization.

Each of the seven target linears of a block (q, k, v, o, gate, up, down) is built by
:func:`make_linear` from the model's :class:`LinearConfig`. A parameterization is an
``nnx.Module`` with the :class:`Linear` interface:

* ``__call__(x)``: ``x @ W`` with ``W`` the effective ``(in, out)`` kernel;
* ``dense_kernel()``: that effective kernel, materialised (for export and inspection);
* ``load_dense(kernel)``: start from a pretrained ``(in, out)`` kernel (``model.init_from``):
  dense copies it, each factorized kind sets its factors as its file's docstring says.

Built-in kinds: ``dense`` (one trainable ``(in, out)`` kernel, this file) and the factorized
``lowrank``, ``lora``, ``sltrain`` and ``cola`` (one file each; they need
``LinearConfig.rank``). Other kinds register themselves with :func:`register_linear`.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = make_linear(LinearConfig(), 4, 3, ("embed", "mlp"), init_std=0.02,
...                     param_dtype=jnp.float32, compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((2, 4))).shape, layer.dense_kernel().shape
((2, 3), (4, 3))
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Protocol
from collections.abc import Callable

import jax
from flax import nnx

from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.cola import CoLALinear
from lowrank_jax.models.lora import LoRALinear
from lowrank_jax.models.lowrank import LowRankLinear
from lowrank_jax.models.matmul import matmul
from lowrank_jax.models.sltrain import SLTrainLinear


@dataclasses.dataclass(frozen=True)
class LinearConfig:
  """Which parameterization the target linears use.

  Attributes:
    kind: a name registered with :func:`register_linear` (``"dense"``, ``"lowrank"``,
      ``"lora"``, ``"sltrain"``, ``"cola"``).
    rank: the rank ``r`` of the factorized kinds (a positive int, at most the smaller side of
      every target linear); required by every kind but ``dense``, which ignores it.
    alpha: the factors' product is scaled by ``alpha / rank`` (``lowrank``, ``lora``,
      ``sltrain``; CoLA has no scale); positive.
    sparsity: SLTrain's density ``delta``: the fraction of the ``in * out`` kernel entries in
      the fixed sparse support, in (0, 1].
    zero_a: ``lora`` only: ``a`` starts at zero as well, as Guitaricet/relora wraps a model
      (``keep_original_weights``); the adapters then train nothing until ReLoRA's first merge
      draws a new ``a``. Off by default (arXiv 2505.22922 trains them from the start).
    only_lr_act: ``cola`` only: the MLP drops its own SiLU, ``down(gate(x) * up(x))``, the
      SiLU inside each CoLA linear being its only nonlinearity: alvin-zyl/CoLA's
      ``only_lr_act`` (``ColaConfig``'s default ``True``, which its 350m, 1b and 7b configs
      keep; its 60m and 130m configs set ``false``). Off by default (LLaMA's SwiGLU).
    dropout: ``lora`` only: the probability, in ``[0, 1)``, that training zeroes an entry of
      the adapter's input, ``y = x W0 + (alpha/r) (dropout(x) a) b``, the frozen path
      untouched: Guitaricet/relora@176f376's ``lora_dropout=0.1`` (``relora.py``). ``0`` by
      default, as the paper's repository runs ReLoRA (``--lora_dropout`` 0.0); evaluation
      never drops (:mod:`lowrank_jax.models.dropout`).
  """

  kind: str = "dense"
  rank: int | None = None
  alpha: float = 32.0
  sparsity: float = 0.03
  zero_a: bool = False
  only_lr_act: bool = False
  dropout: float = 0.0

  def __post_init__(self):
    if self.kind not in _REGISTRY:
      raise ValueError(f"linear kind {self.kind!r} is unknown; expected one of {sorted(_REGISTRY)}")
    if self.rank is not None and (
        isinstance(self.rank, bool) or not isinstance(self.rank, numbers.Integral) or self.rank < 1
    ):
      raise ValueError(f"rank={self.rank!r} must be a positive integer or None")
    if self.rank is None and self.kind in _NEEDS_RANK:
      raise ValueError(f"linear kind {self.kind!r} needs a rank; got rank=None")
    if not self.alpha > 0:
      raise ValueError(f"alpha={self.alpha!r} must be positive")
    if not 0 < self.sparsity <= 1:
      raise ValueError(f"sparsity={self.sparsity!r} must be in (0, 1]")
    if self.zero_a and self.kind != "lora":
      raise ValueError(f"zero_a=True applies to linear kind 'lora', not {self.kind!r}")
    if self.only_lr_act and self.kind != "cola":
      raise ValueError(f"only_lr_act=True applies to linear kind 'cola', not {self.kind!r}")
    if (
        isinstance(self.dropout, bool)
        or not isinstance(self.dropout, numbers.Real)
        or not 0 <= self.dropout < 1
    ):
      raise ValueError(f"dropout={self.dropout!r} must be a number in [0, 1)")
    if self.dropout and self.kind != "lora":
      raise ValueError(f"dropout={self.dropout!r} applies to linear kind 'lora', not {self.kind!r}")


class Linear(Protocol):
  """The interface every parameterization implements."""

  def __call__(self, x: jax.Array) -> jax.Array:
    ...

  def dense_kernel(self) -> jax.Array:
    ...

  def load_dense(self, kernel: jax.Array) -> None:
    ...


class DenseLinear(nnx.Module):
  """``y = x W`` with one trainable kernel ``W`` of shape ``(in, out)``, N(0, init_std)."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      axes: tuple[str, str],
      *,
      init_std: float,
      param_dtype,
      compute_dtype,
      rngs: nnx.Rngs,
      config: LinearConfig | None = None,
  ):
    del config  # dense has no options
    self.kernel = param(
        rngs, nnx.initializers.normal(init_std), (in_features, out_features), param_dtype, axes
    )
    self.compute_dtype = compute_dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return matmul(x.astype(self.compute_dtype), self.kernel[...].astype(self.compute_dtype))

  def dense_kernel(self) -> jax.Array:
    return self.kernel[...]

  def load_dense(self, kernel: jax.Array) -> None:
    """Copies the pretrained ``(in, out)`` kernel (batched over stacked layers)."""
    self.kernel[...] = kernel.astype(self.kernel[...].dtype)


_REGISTRY: dict[str, Callable[..., Linear]] = {
    "dense": DenseLinear,
    "lowrank": LowRankLinear,
    "lora": LoRALinear,
    "sltrain": SLTrainLinear,
    "cola": CoLALinear,
}
_NEEDS_RANK = {"lowrank", "lora", "sltrain", "cola"}


def register_linear(kind: str, factory: Callable[..., Linear], *, needs_rank: bool = False) -> None:
  """Make ``LinearConfig(kind=kind)`` build its linears with ``factory``.

  ``factory(in_features, out_features, axes, *, init_std, param_dtype, compute_dtype, rngs,
  config)`` must return a module with the :class:`Linear` interface. With ``needs_rank``,
  a ``LinearConfig`` of this kind must set ``rank``.
  """
  _REGISTRY[kind] = factory
  if needs_rank:
    _NEEDS_RANK.add(kind)
  else:
    _NEEDS_RANK.discard(kind)


def make_linear(
    config: LinearConfig,
    in_features: int,
    out_features: int,
    axes: tuple[str, str],
    *,
    init_std: float,
    param_dtype,
    compute_dtype,
    rngs: nnx.Rngs,
) -> Linear:
  """Builds one target linear of the parameterization ``config.kind``."""
  return _REGISTRY[config.kind](
      in_features,
      out_features,
      axes,
      init_std=init_std,
      param_dtype=param_dtype,
      compute_dtype=compute_dtype,
      rngs=rngs,
      config=config,
  )
