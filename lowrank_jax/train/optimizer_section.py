"""The ``optimizer`` section: the training method, its hyperparameters and its options.

The options are parsed into the method's typed options class once, when the section is
built (:attr:`OptimizerSection.method_options`); the config resolves the rest once
(:class:`~lowrank_jax.train.methods.ResolvedOptimizer`).

>>> OptimizerSection(method="galore", options={"rank": 8}).method_options.rank
8
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from lowrank_jax.train.config_section import Section
from lowrank_jax.train.fields import setting
from lowrank_jax.train.linear_keys import FIELDS_OF_KIND
from lowrank_jax.train.methods import PAPER_RESTART_EVERY, ResolvedOptimizer, get_method
from lowrank_jax.train.methods.options import MethodOptions, parse_options
from lowrank_jax.train.methods.registration import import_method_modules


@dataclasses.dataclass(frozen=True)
class OptimizerSection(Section):
  """The training method and its hyperparameters.

  Attributes:
    method: ``adamw`` (full rank) or any method of :mod:`lowrank_jax.train.methods`, or one
      registered by ``method_modules`` or a package's ``lowrank_jax.methods`` entry point.
    method_modules: Python modules imported before ``method`` is looked up, whose import
      registers methods defined outside the package
      (:func:`lowrank_jax.train.register_method`), e.g. ``[my_pkg.methods]``.
    learning_rate: peak learning rate of the schedule.
    learning_rates: a learning-rate sweep as one program: one copy of the model per peak
      rate, all trained by one jitted step on the same batches, in place of
      ``learning_rate`` (:mod:`lowrank_jax.train.rate_copies`). Empty: one run.
    dense_learning_rate: peak learning rate of the dense leaves (embeddings, lm_head, norms:
      every parameter outside the target linears, their factors, adapters and sparse values),
      under the same schedule, resets and re-warmups as the matrices' (PyTorch's
      param_groups; :mod:`lowrank_jax.train.dense_rate`). ``null``: ``learning_rate``, one
      rate for both groups as in the references.
    dense_learning_rates: with ``learning_rates``, the dense leaves' peak rate of each copy,
      paired element by element (same length); empty: every copy's dense leaves take
      ``dense_learning_rate`` (or, if that is ``null``, the copy's own rate).
    weight_decay: decoupled weight decay, AdamW's ``p -= lr * weight_decay * p`` at each
      update (``lr`` the leaf's group rate), as in the references: on every trained leaf of
      every method (embedding, lm_head, norms, and the target linears' kernels, model-side
      factors, LoRA adapters or SLTrain values; a projected method's dense leaves and full
      kernels too). Frozen leaves (a LoRA base, SLTrain's support) are not trained, so not
      decayed; LoRO's exact manifold steps move its factors without it.
    b1: Adam's first-moment decay.
    b2: Adam's second-moment decay.
    eps: Adam's denominator term (``null``: the method's reference value, its
      :mod:`lowrank_jax.optim` factory's default: 1e-6 for GaLore, Fira, APOLLO, GoLore, SPAM
      and LoRO, 1e-8 for the others).
    clip_norm: clip the global gradient norm to this value (``null``: no clipping, the paper).
    options: the method's own options, declared by its options class in
      :mod:`lowrank_jax.train.method_options` (e.g. ``rank``, ``update_proj_gap``, ``scale``).
    refactorize_every: weight refactorization period of a factorized method (0: off;
      ``null``: 200 for the ``*_restarts`` methods, else off).
    reset_every: momentum reset period of an Adam-based method (0: off; ``null``: 200 for
      the ``*_restarts`` methods and ReLoRA, whose adapters merge at the same steps).
    recovery_steps: steps over which the learning rate recovers after a reset (paper: 10).
  """

  key: ClassVar[str] = "optimizer"
  method: str = "adamw"
  method_modules: tuple[str, ...] = ()
  learning_rate: float = setting(1e-3, above=0)
  learning_rates: tuple[float, ...] = setting((), above=0)
  dense_learning_rate: float | None = setting(None, above=0)
  dense_learning_rates: tuple[float, ...] = setting((), above=0)
  weight_decay: float = setting(0.0, at_least=0)
  b1: float = setting(0.9, at_least=0, below=1)
  b2: float = setting(0.999, at_least=0, below=1)
  eps: float | None = setting(None, above=0)
  clip_norm: float | None = setting(None, above=0)
  options: dict = setting({})
  refactorize_every: int | None = setting(None, at_least=0)
  reset_every: int | None = setting(None, at_least=0)
  recovery_steps: int = setting(10, at_least=2)

  def _check_together(self):
    import_method_modules(self.method_modules)
    method = get_method(self.method)
    # parsed once, here: every consumer reads the typed options (frozen: set as the init would)
    linear_fields = FIELDS_OF_KIND.get(method.linear_kind, ())
    options = parse_options(method.options, self.options, linear_fields)
    object.__setattr__(self, "_method_options", options)
    self._check_rates()
    if self.refactorize_every and method.linear_kind in ("dense", "cola"):
      raise ValueError(
          f"optimizer.refactorize_every={self.refactorize_every} needs a method "
          f"with factors B A; {self.method!r} trains {method.linear_kind!r} linears"
      )
    if self.reset_every and not method.takes_reset_every:
      raise ValueError(
          f"optimizer.reset_every={self.reset_every} applies to Adam-based methods; "
          f"{self.method!r} is not one"
      )
    if self.reset_every and method.adam_family and self.recovery_steps > self.reset_every:
      raise ValueError(
          f"optimizer.recovery_steps={self.recovery_steps} exceeds "
          f"optimizer.reset_every={self.reset_every}"
      )

  def _check_rates(self):
    rates, dense = list(self.learning_rates), list(self.dense_learning_rates)
    if dense and len(dense) != len(rates):
      raise ValueError(
          f"optimizer.dense_learning_rates={dense} needs one rate per entry of "
          f"optimizer.learning_rates={rates}"
      )
    if dense and self.dense_learning_rate is not None:
      raise ValueError(
          f"optimizer.dense_learning_rate={self.dense_learning_rate} and "
          f"optimizer.dense_learning_rates={dense} both set the dense rate; keep one"
      )
    copies = self.copy_rates()
    if len(set(copies)) < len(copies):
      paired = f" with optimizer.dense_learning_rates={dense}" if dense else ""
      raise ValueError(
          f"optimizer.learning_rates={rates}{paired} repeats a rate; a sweep needs distinct rates"
      )

  def copy_rates(self) -> list[tuple[float, float | None]]:
    """``(peak rate, dense leaves' peak rate)`` of each trained copy: one for a run, one per
    entry of ``learning_rates`` for a sweep; a dense rate of ``None`` is the copy's own."""
    rates = self.learning_rates or (self.learning_rate,)
    dense = self.dense_learning_rates or (self.dense_learning_rate,) * len(rates)
    return list(zip(rates, dense))

  @property
  def method_options(self) -> MethodOptions:
    """``options`` as an instance of the method's options class, its defaults filled in."""
    return self._method_options

  def resolve(self, schedule) -> ResolvedOptimizer:
    """The section with the method's defaults filled in: Adam's ``eps``, the restart
    periods, and the options' that depend on the run's ``schedule`` section (e.g. GoLore's
    length of training)."""
    method = get_method(self.method)
    restart_every = PAPER_RESTART_EVERY if method.restarts else 0
    merge_every = PAPER_RESTART_EVERY if method.restarts or method.merge_lora else 0
    return ResolvedOptimizer(
        method=self.method,
        options=self.method_options.for_run(schedule),
        b1=self.b1,
        b2=self.b2,
        eps=method.default_eps if self.eps is None else self.eps,
        weight_decay=self.weight_decay,
        clip_norm=self.clip_norm,
        refactorize_every=_or(self.refactorize_every, restart_every),
        reset_every=_or(self.reset_every, merge_every),
        recovery_steps=self.recovery_steps,
    )


def _or(value, default):
  """``value``, or ``default`` where it is unset (``None``; 0 is a setting: off)."""
  return default if value is None else value
