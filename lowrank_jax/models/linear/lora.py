"""LoRA: a frozen dense kernel plus a trainable low-rank update.

In Flax layout (``y = x W``, ``W`` of shape ``(in, out)``)::

    W = W0 + (alpha / r) a b,    W0 ~ N(0, init_std) frozen,    a ~ U(+-1/sqrt(in)),    b = 0

the paper's ``W = W0 + (alpha/r) B A`` with ``a = A^T``, ``b = B^T`` (see
:mod:`lowrank_jax.models.linear.lowrank`). ``W0`` stays at its random initialisation: it is a
:class:`Frozen` variable, not an ``nnx.Param``, so ``nnx.state(model, nnx.Param)`` (what the
optimizer and the gradient see) excludes it, while ``nnx.state(model)`` and checkpoints keep it.
ReLoRA restarts (:func:`merge_lora_adapters`) merge ``(alpha/r) a b`` into ``W0`` every few
thousand steps and start a new adapter; its optimizer side is :mod:`lowrank_jax.optim.relora`.
With ``LinearConfig.dropout = p`` a training call (one given a ``dropout_key``) computes
``x W0 + (alpha/r) (dropout(x) a) b``, as Guitaricet/relora@176f376's ``ReLoRaLinear.forward``
(``relora.py``): only the adapter's input is dropped (:mod:`lowrank_jax.models.dropout`).

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from lowrank_jax.models.linear import LinearConfig, make_linear
>>> layer = make_linear(LinearConfig(kind="lora", rank=2), 6, 5, ("embed", "mlp"),
...                     init_std=0.02, param_dtype=jnp.float32, compute_dtype=jnp.float32,
...                     rngs=nnx.Rngs(0))
>>> sorted(nnx.to_pure_dict(nnx.state(layer, nnx.Param)))
['a', 'b']
>>> bool((layer.dense_kernel() == layer.base[...]).all())  # b = 0 at init
True

Started from a pretrained kernel (``model.init_from``), :meth:`LoRALinear.load_dense` makes it
``W0`` and leaves the adapters as LoRA initialises them (``a`` drawn, ``b = 0``): the model
computes the pretrained function at step 0 and the adapters learn an update to it, which is
LoRA's own setting (Hu et al. 2021) and ReLoRA's warm start from a full-rank checkpoint
(Guitaricet/relora@176f376 ``torchrun_main.py``: ``--warmed_up_model`` is loaded, then
``ReLoRaModel`` keeps those weights as ``W0``, ``peft_pretraining/relora.py``).
PiSSA's alternative (adapters from the top singular pairs, ``W0`` the residual) changes
which directions train first; it is not what either reference does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.dropout import dropout
from lowrank_jax.models.linear.factors import kaiming_uniform
from lowrank_jax.models.linear.lowrank import LowRankLinear
from lowrank_jax.models.linear.registry import register_linear
from lowrank_jax.models.matmul import matmul


class Frozen(nnx.Variable):
  """A weight that is part of the model but never trained (LoRA's ``W0``)."""


class LoRALinear(LowRankLinear):
  """``y = x W0 + (alpha / r) (x a) b`` with ``W0`` frozen and ``b`` zero at init.

  Built as :class:`~lowrank_jax.models.linear.factors.FactorizedLinear` says, then ``W0``
  (the kernel's shape and ``axes``, ``N(0, init_std)`` as the dense model's); ``config`` gives
  ``rank``, ``alpha``, ``zero_a`` and ``dropout``.
  """

  zero_b = True

  def build(self, shape, axes, init_std, param_dtype, rngs, config) -> None:
    super().build(shape, axes, init_std, param_dtype, rngs, config)
    self.base = param(rngs, nnx.initializers.normal(init_std), shape, param_dtype, axes, Frozen)
    if config.zero_a:
      self.a[...] = jnp.zeros_like(self.a[...])
    self.dropout = config.dropout

  def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    """``x W0 + (alpha/r) (x a) b``; with ``dropout_key`` (training) and a nonzero
    ``dropout``, the adapter sees ``dropout(x)`` drawn from that key, ``W0`` still ``x``."""
    x = x.astype(self.compute_dtype)
    dense = matmul(x, self.base[...].astype(self.compute_dtype))
    if dropout_key is not None and self.dropout:
      x = dropout(x, self.dropout, dropout_key)
    return dense + super().__call__(x)

  def dense_kernel(self) -> jax.Array:
    """``W0 + (alpha / r) a b``, computed in float32, in the parameters' dtype."""
    kernel = self.base[...].astype(jnp.float32) + self.low_rank_kernel()
    return kernel.astype(self.base[...].dtype)

  def load_dense(self, kernel: jax.Array) -> None:
    """``W0 <-`` the pretrained kernel; the adapters keep their initialisation (``b = 0``)."""
    self.base[...] = kernel.astype(self.base[...].dtype)

  def merge_and_reinit(self, key: jax.Array) -> None:
    """ReLoRA's restart: ``W0 <- W0 + (alpha/r) a b``, ``a <- U(+-1/sqrt(in))``, ``b <- 0``.

    The layer computes the same function before and after (``b = 0``). Works on stacked
    layers (leading axes), drawing a different ``a`` for each.
    """
    self.base[...] = self.dense_kernel()
    in_features = self.a[...].shape[-2]
    self.a[...] = kaiming_uniform(in_features)(key, self.a[...].shape, self.a[...].dtype)
    self.b[...] = jnp.zeros_like(self.b[...])


def merge_lora_adapters(model: nnx.Module, key: jax.Array) -> None:
  """Applies :meth:`LoRALinear.merge_and_reinit` to every LoRA linear of ``model``, in place.

  Call it after the optimizer update that ends each ReLoRA cycle, together with a reset
  of the adapters' optimizer state (:func:`lowrank_jax.optim.relora.relora` does that
  reset). Each linear draws its new ``a`` from ``key`` folded with its position in the
  graph. Wrap it in ``nnx.jit`` to run it on device.

  >>> import jax.numpy as jnp
  >>> from lowrank_jax.models.linear import LinearConfig, make_linear
  >>> layer = make_linear(LinearConfig("lora", rank=2), 6, 5, ("embed", "mlp"), init_std=0.02,
  ...                     param_dtype=jnp.float32, compute_dtype=jnp.float32,
  ...                     rngs=nnx.Rngs(0))
  >>> layer.b[...] = jnp.ones((2, 5))  # as if trained
  >>> kernel = layer.dense_kernel()
  >>> merge_lora_adapters(layer, jax.random.key(1))
  >>> bool(jnp.allclose(layer.base[...], kernel)), bool((layer.b[...] == 0).all())
  (True, True)
  """
  layers = [node for _, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)]
  for index, layer in enumerate(layers):
    layer.merge_and_reinit(jax.random.fold_in(key, index))


register_linear("lora", LoRALinear, needs_rank=True)
