"""Methods defined outside the package: one call registers them, then they train as built-ins.

:func:`register_method` adds a :class:`~lowrank_jax.train.methods.Method` to the registry
(``METHODS``) from an optax factory, so ``train``, ``eval``, ``benchmark``, ``memory``, the
reports and ``--print-config`` take its name as they take ``galore``'s. A run started in
another process (a ``lowrank-jax train`` subprocess, a grid's cell, a resume, ``eval``) finds
it through ``optimizer.method_modules``, the modules it imports before it looks the method up
(saved in the run's ``config.yaml``), or through the entry-point group ``lowrank_jax.methods``
of an installed package (``my_method = "my_pkg.methods"``), loaded when the name is missed.

The factory is called as the built-ins' :mod:`lowrank_jax.optim` factories are::

    factory(schedule, **adam, **options)

with ``schedule`` the run's learning-rate schedule (peak ``optimizer.learning_rate``),
``adam`` those of ``optimizer.b1``, ``b2``, ``eps``, ``weight_decay`` that its signature
names, and ``options`` the method's ``optimizer.options``. With ``leaves="target"`` its
transform gets the seven target matrices of every block and AdamW the other leaves (the
projected methods' split, arXiv 2505.22922, experimental protocol), through
:func:`~lowrank_jax.optim.param_groups`; with ``leaves="all"`` it gets every leaf.

>>> import optax
>>> def scaled_sgd(learning_rate, scale: float = 0.5):
...   return optax.chain(optax.scale(scale), optax.scale_by_learning_rate(learning_rate))
>>> method = register_method("scaled_sgd", scaled_sgd, memory=lambda m, n, r, d: Entries(m * n, 0))
>>> method.options().scale
0.5
>>> register_method("galore", scaled_sgd)
Traceback (most recent call last):
...
ValueError: register_method name='galore' is taken by a built-in method; allowed: a new name
>>> unregister_method("scaled_sgd")
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import typing
from collections.abc import Callable, Sequence

import optax

from lowrank_jax.train.methods import adam_family
from lowrank_jax.train.methods.method import (
    Entries,
    MemoryFormula,
    Method,
    ResolvedOptimizer,
    on_target_matrices,
)
from lowrank_jax.train.methods.options import MethodOptions, NoOptions
from lowrank_jax.train.update_records import schedule_record

__all__ = ["Entries", "import_method_modules", "register_method", "unregister_method"]

ENTRY_POINT_GROUP = "lowrank_jax.methods"
LEAVES = ("target", "all")
LINEAR_KINDS = ("dense", "lowrank", "lora", "sltrain", "cola")
ADAM_HYPERPARAMETERS = ("b1", "b2", "eps", "weight_decay")

_registered: set[str] = set()  # the names register_method added (unregister_method's)


def register_method(
    name: str,
    factory: Callable[..., optax.GradientTransformation],
    *,
    options: type | None = None,
    leaves: str = "target",
    memory: MemoryFormula | None = None,
    linear_kind: str = "dense",
) -> Method:
  """Registers the training method ``name``, built from the optax ``factory``.

  Args:
    name: the method's name, ``optimizer.method``; not a registered one.
    factory: ``factory(learning_rate, **options)`` -> ``optax.GradientTransformation``; the
      keywords ``b1``, ``b2``, ``eps``, ``weight_decay`` it names get the run's
      ``optimizer.*`` (an ``eps`` default is the run's where ``optimizer.eps`` is unset).
    options: a frozen dataclass of its options (``optimizer.options``), its fields the
      factory's keywords, typed by their annotations and bounded with
      :func:`~lowrank_jax.train.fields.setting`; ``None``: the factory's keywords with
      defaults (other than Adam's), their defaults the factory's, typed by their annotations.
    leaves: ``"target"``: the factory's transform trains the seven target matrices of every
      block and AdamW the others (embeddings, lm_head, norms); ``"all"``: it trains every leaf.
    memory: its memory formula ``memory(m, n, rank, density) -> Entries`` per target matrix
      (arXiv 2505.22922, memory accounting); ``None``: the memory report says ``n/a``.
    linear_kind: the parameterization of the target linears it trains (``dense``,
      ``lowrank``, ``lora``, ``sltrain``, ``cola``).

  Returns:
    The registered :class:`~lowrank_jax.train.methods.Method`.

  Raises:
    ValueError: a taken name, a factory that is not callable, options that are not a frozen
      dataclass, an unknown ``leaves`` or ``linear_kind``, a memory formula not callable.
  """
  from lowrank_jax.train.methods import METHODS  # the registry imports this module

  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"register_method name={name!r} is not allowed; allowed: a Python identifier")
  if name in METHODS:
    owner = "a registered" if name in _registered else "a built-in"
    raise ValueError(
        f"register_method name={name!r} is taken by {owner} method; allowed: a new name"
    )
  if not callable(factory):
    raise ValueError(
        f"register_method factory={factory!r} is not callable; allowed: an optax factory"
    )
  if leaves not in LEAVES:
    raise ValueError(f"register_method leaves={leaves!r} is unknown; allowed: {', '.join(LEAVES)}")
  if linear_kind not in LINEAR_KINDS:
    raise ValueError(
        f"register_method linear_kind={linear_kind!r} is unknown; allowed: {', '.join(LINEAR_KINDS)}"
    )
  if memory is not None and not callable(memory):
    raise ValueError(
        f"register_method memory={memory!r} is not callable; allowed: memory(m, n, rank, density)"
    )
  options = _factory_options(name, factory) if options is None else _method_options(options)
  build = _target_and_adamw(factory) if leaves == "target" else _every_leaf(factory)
  method = Method(build, schedule_record, memory, linear_kind, options=options, factory=factory)
  METHODS[name] = method
  _registered.add(name)
  return method


def unregister_method(name: str) -> None:
  """Removes a method :func:`register_method` added (a built-in stays)."""
  from lowrank_jax.train.methods import METHODS

  if name not in _registered:
    raise ValueError(
        f"unregister_method name={name!r} was not registered; allowed: {sorted(_registered)}"
    )
  _registered.discard(name)
  del METHODS[name]


def import_method_modules(modules: Sequence[str], key: str = "optimizer.method_modules") -> None:
  """Imports ``modules``, whose import registers their methods (``key`` names them in the
  error: one line, the module and why it does not import)."""
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as error:
      raise ValueError(f"{key} names {module!r}, which does not import: {error}") from None


def load_entry_point(name: str) -> None:
  """Loads the ``lowrank_jax.methods`` entry point called ``name``, if a package has one:
  loading imports its module, which registers the method."""
  for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
    if entry_point.name == name:
      entry_point.load()


def _adam_keywords(factory: Callable) -> tuple[str, ...]:
  parameters = inspect.signature(factory).parameters
  return tuple(name for name in ADAM_HYPERPARAMETERS if name in parameters)


def _transform(factory: Callable, schedule, section: ResolvedOptimizer, mesh):
  """``factory``'s transform for the run: its Adam keywords and options from ``section``."""
  adam = section.adam_hyperparameters()
  keywords = {name: adam[name] for name in _adam_keywords(factory)}
  return factory(schedule, **keywords, **section.options.factory_kwargs(mesh))


def _every_leaf(factory: Callable) -> Callable:
  def build(schedule, section: ResolvedOptimizer, mesh=None) -> optax.GradientTransformation:
    return _transform(factory, schedule, section, mesh)

  return build


def _target_and_adamw(factory: Callable) -> Callable:
  def build(schedule, section: ResolvedOptimizer, mesh=None) -> optax.GradientTransformation:
    return on_target_matrices(
        _transform(factory, schedule, section, mesh), adam_family.build(schedule, section)
    )

  return build


def _method_options(options) -> type:
  """``options`` (a frozen dataclass) as a :class:`MethodOptions`, whose fields are checked."""
  if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
    raise ValueError(
        f"register_method options={options!r} is not a dataclass; allowed: a frozen dataclass"
    )
  if not options.__dataclass_params__.frozen:
    raise ValueError(
        f"register_method options={options.__name__} is not frozen; allowed: a frozen dataclass"
    )
  if issubclass(options, MethodOptions):
    return options
  return dataclasses.make_dataclass(
      options.__name__, [], bases=(options, MethodOptions), frozen=True
  )


def _factory_options(name: str, factory: Callable) -> type:
  """The options class of ``factory``'s keywords with defaults (Adam's left to the section),
  each typed by its annotation, else by its default."""
  hints = typing.get_type_hints(factory)
  fields = []
  for parameter in list(inspect.signature(factory).parameters.values())[1:]:
    if parameter.default is inspect.Parameter.empty or parameter.name in ADAM_HYPERPARAMETERS:
      continue
    hint = hints.get(parameter.name, type(parameter.default))
    fields.append((parameter.name, hint, dataclasses.field(default=parameter.default)))
  if not fields:
    return NoOptions
  options = dataclasses.make_dataclass(
      f"{name}_options", fields, bases=(MethodOptions,), frozen=True
  )
  options.__doc__ = _keyword_docs(name, fields)
  return options


def _keyword_docs(name: str, fields) -> str:
  """The options' docstring: its ``Attributes:`` give each keyword its type and default, the
  comments ``--print-config`` prints as it prints the built-ins' (their docstrings')."""
  lines = [f"The options of ``{name}``: its factory's keywords.", "", "Attributes:"]
  for keyword, hint, field in fields:
    kind = getattr(hint, "__name__", str(hint))
    lines.append(
        f"  {keyword}: {kind}, a keyword of {name}'s factory (its default {field.default!r})."
    )
  return "\n".join(lines)
