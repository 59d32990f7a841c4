"""The LLaMA of the GaLore-lineage protocol in Flax NNX.

For input ids ``x`` of shape ``(batch, seq)``::

    h_0 = E[x]
    a_l = h_{l-1} + o(attn(rope(q(n(h_{l-1}))), rope(k(n(h_{l-1}))), v(n(h_{l-1}))))
    h_l = a_l + down(silu(gate(n(a_l))) * up(n(a_l)))
    logits = lm_head(n(h_L))

with ``n`` an RMSNorm, causal softmax attention over ``num_heads`` heads (keys and values
shared by groups of ``num_heads // num_kv_heads`` of them with grouped-query attention),
``lm_head = E^T`` with tied embeddings, and RoPE in the rotate-half convention (the one of
HF transformers, so weights move across unchanged).
Module names follow HF's ``LlamaForCausalLM`` (``self_attn.q_proj``, ``mlp.gate_proj``,
``input_layernorm``, ...), which makes the weight mapping of :mod:`lowrank_jax.models.hf`
mechanical.

Every parameter carries logical axis names: ``vocab``, ``embed``, ``heads`` (the flattened
``num_heads * head_dim``), ``mlp``, ``norm`` and, with ``scan_layers``, a leading ``layers``.
Under an ambient mesh (``jax.sharding.use_abstract_mesh``, as the train step sets) the
hidden states between blocks are constrained to FSDP's activation layout, the batch axis
split over the mesh's ``data`` and ``fsdp`` axes (:func:`shard_activation_batch`); without
one XLA's propagation follows the weights' ``embed`` sharding and gathers whole batches.

Training passes ``dropout_key`` for LoRA's adapter dropout (``LinearConfig.dropout``): block
``l`` gets ``fold_in(dropout_key, l)`` (scanned or not, the same masks) and its ``i``-th target
linear (q, k, v, o, gate, up, down) ``fold_in`` of that with ``i``, so every adapter draws its
own mask, as each of Guitaricet/relora's ``ReLoRaLinear`` has its own ``nn.Dropout``.
Evaluation passes none and drops nothing; with ``dropout`` 0 the key is ignored.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from lowrank_jax.models import Llama, LlamaConfig
>>> model = Llama(LlamaConfig.preset("nano", num_layers=2, vocab_size=64), rngs=nnx.Rngs(0))
>>> model(jnp.zeros((2, 5), jnp.int32)).shape
(2, 5, 64)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from lowrank_jax.models.config import LlamaConfig
from lowrank_jax.models.annotated_param import param
from lowrank_jax.models.linear import make_linear
from lowrank_jax.models.matmul import matmul

ACTIVATION_BATCH_AXES = ("data", "fsdp")


def shard_activation_batch(x: jax.Array) -> jax.Array:
  """``x`` with its leading (batch) axis split over the ambient mesh's batch axes.

  A no-op without an ambient mesh, or where those axes are absent, of size 1, or do not
  divide the batch.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  axes = tuple(a for a in ACTIVATION_BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
  if not axes or x.shape[0] % math.prod(mesh.shape[a] for a in axes):
    return x
  return jax.lax.with_sharding_constraint(x, PartitionSpec(axes))


class RMSNorm(nnx.Module):
  """``y = w * x / sqrt(mean(x^2) + eps)``, statistics in float32, ``w`` initialised to 1."""

  def __init__(self, size: int, eps: float, *, param_dtype, rngs: nnx.Rngs):
    self.weight = param(rngs, nnx.initializers.ones, (size,), param_dtype, ("norm",))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(x.dtype) * normed.astype(x.dtype)


def rotary_embedding(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Applies RoPE to ``x`` of shape ``(batch, seq, heads, head_dim)``.

  Rotate-half convention: with ``x = [x1, x2]`` split on the last axis and per-pair
  frequencies ``f_i = theta^(-2i/head_dim)``, ``y = x cos(p f) + [-x2, x1] sin(p f)``.
  Angles are computed in float32.
  """
  half = x.shape[-1] // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (batch, seq, half)
  angles = jnp.concatenate([angles, angles], axis=-1)[..., None, :]  # broadcast over heads
  x1, x2 = x[..., :half], x[..., half:]
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x.astype(jnp.float32) * jnp.cos(angles) + rotated.astype(jnp.float32) * jnp.sin(angles)
  return out.astype(x.dtype)


def _project(linear, x: jax.Array, dropout_key: jax.Array | None, index: int) -> jax.Array:
  """``linear(x)``; in training the ``index``-th linear of its block gets its own dropout key."""
  if dropout_key is None:
    return linear(x)
  return linear(x, dropout_key=jax.random.fold_in(dropout_key, index))


def _linears(config: LlamaConfig, rngs: nnx.Rngs, **axes: tuple[str, str]):
  """The target linears named in ``axes`` (their logical axes), of the config's shapes."""
  policy = config.dtype
  return {
      name: make_linear(
          config.linear,
          *config.target_linears[name],
          name_axes,
          init_std=config.init_std,
          param_dtype=policy.param,
          compute_dtype=policy.compute,
          rngs=rngs,
      )
      for name, name_axes in axes.items()
  }


class Attention(nnx.Module):
  """Causal self-attention with RoPE and no biases; grouped-query where ``num_kv_heads``
  is below ``num_heads`` (``jax.nn.dot_product_attention`` repeats each key/value head
  for its group of query heads)."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    layers = _linears(
        config,
        rngs,
        q_proj=("embed", "heads"),
        k_proj=("embed", "heads"),
        v_proj=("embed", "heads"),
        o_proj=("heads", "embed"),
    )
    self.q_proj, self.k_proj = layers["q_proj"], layers["k_proj"]
    self.v_proj, self.o_proj = layers["v_proj"], layers["o_proj"]
    self.num_heads, self.kv_heads, self.head_dim, self.rope_theta = (
        config.num_heads,
        config.kv_heads,
        config.head_dim,
        config.rope_theta,
    )

  def __call__(
      self, x: jax.Array, positions: jax.Array, dropout_key: jax.Array | None = None
  ) -> jax.Array:
    batch, seq, _ = x.shape
    split = lambda t, heads: t.reshape(batch, seq, heads, self.head_dim)
    project = lambda linear, h, index: _project(linear, h, dropout_key, index)
    q = rotary_embedding(
        split(project(self.q_proj, x, 0), self.num_heads), positions, self.rope_theta
    )
    k = rotary_embedding(
        split(project(self.k_proj, x, 1), self.kv_heads), positions, self.rope_theta
    )
    v = split(project(self.v_proj, x, 2), self.kv_heads)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    return project(self.o_proj, out.reshape(batch, seq, self.num_heads * self.head_dim), 3)


class MLP(nnx.Module):
  """SwiGLU: ``down(silu(gate x) * up x)``; ``down(gate x * up x)`` with CoLA's
  ``only_lr_act`` (:class:`~lowrank_jax.models.linear.LinearConfig`), whose linears carry
  their own SiLU."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    layers = _linears(
        config,
        rngs,
        gate_proj=("embed", "mlp"),
        up_proj=("embed", "mlp"),
        down_proj=("mlp", "embed"),
    )
    self.gate_proj, self.up_proj, self.down_proj = (
        layers["gate_proj"],
        layers["up_proj"],
        layers["down_proj"],
    )
    self.only_lr_act = config.linear.only_lr_act

  def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    project = lambda linear, h, index: _project(linear, h, dropout_key, index)
    gate = project(self.gate_proj, x, 4)
    hidden = (gate if self.only_lr_act else jax.nn.silu(gate)) * project(self.up_proj, x, 5)
    return project(self.down_proj, hidden, 6)


class Block(nnx.Module):
  """One pre-norm transformer block."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    norm = lambda: RMSNorm(
        config.hidden_size, config.rms_norm_eps, param_dtype=config.dtype.param, rngs=rngs
    )
    self.input_layernorm = norm()
    self.self_attn = Attention(config, rngs=rngs)
    self.post_attention_layernorm = norm()
    self.mlp = MLP(config, rngs=rngs)

  def __call__(
      self, x: jax.Array, positions: jax.Array, dropout_key: jax.Array | None = None
  ) -> jax.Array:
    x = x + self.self_attn(self.input_layernorm(x), positions, dropout_key)
    return x + self.mlp(self.post_attention_layernorm(x), dropout_key)


def _stacked_blocks(config: LlamaConfig, rngs: nnx.Rngs) -> Block:
  """``num_layers`` blocks whose parameters are stacked on a leading ``layers`` axis."""

  @nnx.split_rngs(splits=config.num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def create(rngs: nnx.Rngs) -> Block:
    return Block(config, rngs=rngs)

  return create(rngs)


class Llama(nnx.Module):
  """The decoder-only LLaMA; ``__call__(input_ids, positions=None, *, dropout_key=None)``
  returns float32 logits (``dropout_key``: training's, for LoRA's adapter dropout).

  With ``config.tie_word_embeddings`` the model has no ``lm_head`` parameter: the logits are
  ``h E^T`` (one ``(vocab, embed)`` matrix, trained by both uses)."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    policy = config.dtype
    vocab_matrix = lambda *axes: param(
        rngs,
        nnx.initializers.normal(config.init_std),
        tuple({"vocab": config.vocab_size, "embed": config.hidden_size}[a] for a in axes),
        policy.param,
        axes,
    )
    self.embed_tokens = vocab_matrix("vocab", "embed")
    if config.scan_layers:
      self.layers = _stacked_blocks(config, rngs)
    else:
      self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
    self.norm = RMSNorm(
        config.hidden_size, config.rms_norm_eps, param_dtype=policy.param, rngs=rngs
    )
    if not config.tie_word_embeddings:
      self.lm_head = vocab_matrix("embed", "vocab")

  def output_kernel(self) -> jax.Array:
    """The ``(embed, vocab)`` matrix of the logits: ``lm_head``, or ``E^T`` when tied."""
    if self.config.tie_word_embeddings:
      return self.embed_tokens[...].T
    return self.lm_head[...]

  def __call__(
      self,
      input_ids: jax.Array,
      positions: jax.Array | None = None,
      *,
      dropout_key: jax.Array | None = None,
  ) -> jax.Array:
    config = self.config
    if input_ids.shape[-1] > config.max_seq_len:
      raise ValueError(
          f"sequence length {input_ids.shape[-1]} exceeds " f"max_seq_len={config.max_seq_len}"
      )
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(config.dtype.compute)
    if not config.linear.dropout:
      dropout_key = None
    x = self._run_blocks(shard_activation_batch(x), positions, dropout_key)
    x = self.norm(x)
    return matmul(x, self.output_kernel().astype(config.dtype.compute)).astype(jnp.float32)

  def _run_blocks(
      self, x: jax.Array, positions: jax.Array, dropout_key: jax.Array | None
  ) -> jax.Array:
    apply = lambda block, h, key: shard_activation_batch(block(h, positions, key))
    if self.config.remat:
      apply = nnx.remat(apply)
    layer_keys = (
        None
        if dropout_key is None
        else jax.vmap(functools.partial(jax.random.fold_in, dropout_key))(
            jnp.arange(self.config.num_layers)
        )
    )
    if not self.config.scan_layers:
      for index, block in enumerate(self.layers):
        x = apply(block, x, None if layer_keys is None else layer_keys[index])
      return x
    graphdef, stacked = nnx.split(self.layers)

    def body(h, block_state_and_key):
      block_state, key = block_state_and_key
      return apply(nnx.merge(graphdef, block_state), h, key), None

    x, _ = jax.lax.scan(body, x, (stacked, layer_keys))
    return x
