"""Which parameterization the target linears use, and its options, checked when built.

>>> LinearConfig(kind="lowrank", rank=8).alpha
32.0
>>> LinearConfig(kind="lowrank")
Traceback (most recent call last):
...
ValueError: linear kind 'lowrank' needs a rank; got rank=None
"""

from __future__ import annotations

import dataclasses
import numbers

from lowrank_jax.models.linear.registry import needs_rank, registered_kinds


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
    if self.kind not in registered_kinds():
      raise ValueError(
          f"linear kind {self.kind!r} is unknown; expected one of {registered_kinds()}"
      )
    if self.rank is not None and (
        isinstance(self.rank, bool) or not isinstance(self.rank, numbers.Integral) or self.rank < 1
    ):
      raise ValueError(f"rank={self.rank!r} must be a positive integer or None")
    if self.rank is None and needs_rank(self.kind):
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
