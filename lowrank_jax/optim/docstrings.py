"""Argument documentation shared by the public optimizer factories.

The GaLore family shares most arguments; :func:`shared_args` fills the
``{shared_args}`` (and ``{alias_args}``) placeholders of a docstring so that the
text lives in one place.

>>> @shared_args
... def f(rank=4):
...     '''Example.
...
...     Args:
...       {shared_args}
...     '''
>>> "update_proj_gap:" in f.__doc__
True
"""

from __future__ import annotations

import textwrap

_SHARED = """\
rank: projection rank ``r`` (a Python int), at most the smaller side of every
  projected matrix (checked at init). Shapes depend on it: with
  ``optax.inject_hyperparams`` list it (and ``update_proj_gap``) in ``static_args``.
update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
b1: Adam's first-moment decay, in [0, 1).
b2: Adam's second-moment decay, in [0, 1).
eps: added to ``sqrt(nu)`` (the references' placement), 1e-6 in the GaLore family.
projection_mask: which leaves are projected: None (every leaf with ndim >= 2),
  a pytree of bools, or a callable on the params; the other leaves get the
  references' Adam with the same hyperparameters (see
  :mod:`lowrank_jax.optim._projection.masking`).
moment_dtype: storage dtype of all Adam moments (e.g. ``jnp.bfloat16``);
  None keeps each parameter's dtype. Arithmetic and SVDs are float32.
options: :class:`~lowrank_jax.optim.projection_options.ProjectionOptions`: side
  rule, dimension numbers, refresh method (``"svd"`` is computed through the Gram
  matrix's eigendecomposition on CPUs and NVIDIA GPUs), moment policy, staggering,
  seed, projector dtype. None uses the method's defaults."""

_ALIAS = """\
learning_rate: a float or an optax schedule.
weight_decay: decoupled weight decay (``p -= lr * wd * p``), >= 0.
mask: the leaves weight decay applies to, as optax's ``mask`` (a pytree of bools
  or a callable on the params); None decays every leaf, as the references."""


def _block(text: str) -> str:
  return textwrap.indent(text, " " * 6).lstrip()


def shared_args(fn=None, **extra: str):
  """Fills ``{shared_args}``, ``{alias_args}`` and ``{<name>}`` for each ``extra`` block.

  Use bare (``@shared_args``) or with method-specific blocks
  (``@shared_args(apollo_args=TEXT)``).
  """

  def fill(fn):
    doc = fn.__doc__.replace("{shared_args}", _block(_SHARED)).replace(
        "{alias_args}", _block(_ALIAS)
    )
    for name, text in extra.items():
      doc = doc.replace("{" + name + "}", _block(text))
    fn.__doc__ = doc
    return fn

  return fill(fn) if fn is not None else fill
