"""The linear layer as a swappable parameterization.

Each of the seven target linears of a block (q, k, v, o, gate, up, down) is built by
:func:`make_linear` from the model's :class:`LinearConfig`. A parameterization is an
``nnx.Module`` with the :class:`Linear` interface:

* ``__call__(x)``: ``x @ W`` with ``W`` the effective ``(in, out)`` kernel;
* ``dense_kernel()``: that effective kernel, materialised (for export and inspection).

Only ``dense`` exists so far (``W`` is one trainable ``(in, out)`` kernel); factorized
kinds register themselves with :func:`register_linear`.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> layer = make_linear(LinearConfig(), 4, 3, ("embed", "mlp"), init_std=0.02,
...                     param_dtype=jnp.float32, compute_dtype=jnp.float32, rngs=nnx.Rngs(0))
>>> layer(jnp.ones((2, 4))).shape, layer.dense_kernel().shape
((2, 3), (4, 3))
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import jax
import jax.numpy as jnp
from flax import nnx


def param(rngs: nnx.Rngs, init: Callable, shape: tuple[int, ...], dtype,
          axes: tuple[str | None, ...]) -> nnx.Param:
  """A parameter annotated with logical axis names (one per dimension) for sharding.

  The names are stored as the ``out_sharding`` metadata that ``nnx.get_partition_spec``
  reads; the trainer maps them onto mesh axes with its logical-axis rules.
  """
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not name every dimension of shape {shape}")
  return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


@dataclasses.dataclass(frozen=True)
class LinearConfig:
  """Which parameterization the target linears use.

  Attributes:
    kind: a name registered with :func:`register_linear` (``"dense"``).
  """

  kind: str = "dense"

  def __post_init__(self):
    if self.kind not in _REGISTRY:
      raise ValueError(f"linear kind {self.kind!r} is unknown; expected one of {sorted(_REGISTRY)}")


class Linear(Protocol):
  """The interface every parameterization implements."""

  def __call__(self, x: jax.Array) -> jax.Array: ...

  def dense_kernel(self) -> jax.Array: ...


class DenseLinear(nnx.Module):
  """``y = x W`` with one trainable kernel ``W`` of shape ``(in, out)``, N(0, init_std)."""

  def __init__(self, in_features: int, out_features: int, axes: tuple[str, str], *,
               init_std: float, param_dtype, compute_dtype, rngs: nnx.Rngs,
               config: LinearConfig | None = None):
    del config  # dense has no options
    self.kernel = param(rngs, nnx.initializers.normal(init_std), (in_features, out_features),
                        param_dtype, axes)
    self.compute_dtype = compute_dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.dot(x.astype(self.compute_dtype), self.kernel[...].astype(self.compute_dtype))

  def dense_kernel(self) -> jax.Array:
    return self.kernel[...]


_REGISTRY: dict[str, Callable[..., Linear]] = {"dense": DenseLinear}


def register_linear(kind: str, factory: Callable[..., Linear]) -> None:
  """Make ``LinearConfig(kind=kind)`` build its linears with ``factory``.

  ``factory(in_features, out_features, axes, *, init_std, param_dtype, compute_dtype, rngs,
  config)`` must return a module with the :class:`Linear` interface.
  """
  _REGISTRY[kind] = factory


def make_linear(config: LinearConfig, in_features: int, out_features: int,
                axes: tuple[str, str], *, init_std: float, param_dtype, compute_dtype,
                rngs: nnx.Rngs) -> Linear:
  """Builds one target linear of the parameterization ``config.kind``."""
  return _REGISTRY[config.kind](in_features, out_features, axes, init_std=init_std,
                                param_dtype=param_dtype, compute_dtype=compute_dtype,
                                rngs=rngs, config=config)
