"""Behaviour of ``spam`` / ``stable_spam`` as optax transforms.

optax's trio (jit and dtype stability, state under sharding, init on abstract
inputs), an orbax round trip, composition with ``optax.chain``,
``optax.inject_hyperparams`` and ``optax.MultiSteps``, argument validation, and
the reset semantics checked directly on the state. Agreement with the PyTorch
references is in ``test_parity_spam.py``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lowrank_jax.optim import (
    ScaleBySpamState,
    ScaleByStableSpamState,
    scale_by_spam,
    scale_by_stable_spam,
    spam,
    stable_spam,
)

RESET_INTERVAL = 3
NUM_STEPS = 4  # crosses the reset at step 3
SPAM_SETTINGS = dict(reset_interval=RESET_INTERVAL, warmup_steps=2, spike_grace_steps=2)
STABLE_SPAM_SETTINGS = dict(reset_interval=RESET_INTERVAL)

ALIASES = {
    "spam": lambda learning_rate=1e-2, **kwargs: spam(learning_rate, **SPAM_SETTINGS, **kwargs),
    "stable_spam": lambda learning_rate=1e-2, **kwargs: stable_spam(
        learning_rate, **STABLE_SPAM_SETTINGS, **kwargs
    ),
}
SCALE_BYS = {
    "spam": lambda **kwargs: scale_by_spam(**SPAM_SETTINGS, **kwargs),
    "stable_spam": lambda **kwargs: scale_by_stable_spam(**STABLE_SPAM_SETTINGS, **kwargs),
}
FACTORIES_AND_SETTINGS = {
    "spam": (spam, SPAM_SETTINGS),
    "stable_spam": (stable_spam, STABLE_SPAM_SETTINGS),
}
METHODS = sorted(ALIASES)


def make_params(dtype=jnp.float32):
  return {"w": jnp.ones((16, 4), dtype), "b": jnp.zeros((8,), dtype)}


def gradients(params, step: int):
  keys = jax.random.split(jax.random.key(step), 2)
  return {
      name: jax.random.normal(key, leaf.shape, leaf.dtype)
      for key, (name, leaf) in zip(keys, sorted(params.items()))
  }


def run(transform, params, num_steps=NUM_STEPS, grads_fn=gradients):
  """Applies ``num_steps`` jitted updates; returns the final params and state."""
  state = transform.init(params)
  step = jax.jit(
      lambda params, state, grads: _apply(transform, params, state, grads), donate_argnums=1
  )
  for i in range(num_steps):
    params, state = step(params, state, grads_fn(params, i))
  return params, state


def _apply(transform, params, state, grads):
  updates, state = transform.update(grads, state, params)
  return optax.apply_updates(params, updates), state


def shapes_and_dtypes(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


# --- argument validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, kwargs, name",
    [
        (spam, dict(b1=1.0), "b1"),
        (spam, dict(eps=-1.0), "eps"),
        (spam, dict(spike_threshold=-1.0), "spike_threshold"),
        (spam, dict(reset_interval=0), "reset_interval"),
        (spam, dict(warmup_steps=2.5), "warmup_steps"),
        (spam, dict(spike_grace_steps=1), "spike_grace_steps"),
        (spam, dict(moment_dtype=jnp.int32), "moment_dtype"),
        (spam, dict(weight_decay=-0.1), "weight_decay"),
        (stable_spam, dict(gamma1=1.5), "gamma1"),
        (stable_spam, dict(gamma2=-0.1), "gamma2"),
        (stable_spam, dict(theta=1.0), "theta"),
        (stable_spam, dict(b2=2.0), "b2"),
        (stable_spam, dict(reset_interval=-5), "reset_interval"),
    ],
)
def test_factory_rejects_bad_arguments(factory, kwargs, name):
  with pytest.raises(ValueError, match=f"^{name}") as error:
    factory(1e-3, **kwargs)
  assert "\n" not in str(error.value) and repr(next(iter(kwargs.values()))) in str(error.value)


@pytest.mark.parametrize("factory", [spam, stable_spam])
def test_factory_rejects_bad_learning_rate(factory):
  for bad in (-1.0, "0.1"):
    with pytest.raises(ValueError, match="^learning_rate"):
      factory(bad)


# --- optax's trio ----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("moment_dtype", [None, jnp.bfloat16])
def test_jit_and_dtype_stability(method, param_dtype, moment_dtype):
  transform = ALIASES[method](moment_dtype=moment_dtype)
  params = make_params(param_dtype)
  initial_state = transform.init(params)
  final_params, final_state = run(transform, params)

  chex.assert_trees_all_equal_shapes_and_dtypes(final_params, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(final_state, initial_state)
  chex.assert_tree_all_finite(final_params)
  expected_moment_dtype = moment_dtype or param_dtype
  assert all(m.dtype == expected_moment_dtype for m in jax.tree.leaves(final_state[0].mu))
  assert not np.array_equal(np.asarray(final_params["w"]), np.asarray(params["w"]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.float16])
def test_state_types_unchanged_by_update_under_sharding(method, param_dtype):
  """Shapes, dtypes, weak types and shardings (``jax.typeof``), eager and jitted."""
  mesh = jax.make_mesh((8,), ("data",))
  shardings = {"w": NamedSharding(mesh, P("data", None)), "b": NamedSharding(mesh, P())}
  params = jax.device_put(make_params(param_dtype), shardings)
  grads = jax.device_put(gradients(params, 0), shardings)
  transform = ALIASES[method]()
  types = lambda tree: jax.tree.map(jax.typeof, tree)
  with jax.set_mesh(mesh):
    state = transform.init(params)
    _, updated = transform.update(grads, state, params)
    jitted_state = jax.jit(transform.init)(params)
    _, jitted_updated = jax.jit(transform.update)(grads, jitted_state, params)

  assert types(updated) == types(state)
  assert types(jitted_state) == types(state)
  assert types(jitted_updated) == types(state)
  for moments in (updated[0].mu, updated[0].nu):
    for name, moment in moments.items():
      assert moment.sharding.is_equivalent_to(shardings[name], moment.ndim)


@pytest.mark.parametrize("method", METHODS)
def test_init_on_abstract_inputs(method):
  transform = ALIASES[method](moment_dtype=jnp.bfloat16)
  params = make_params()
  abstract_params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  expected = shapes_and_dtypes(transform.init(params))
  assert shapes_and_dtypes(transform.init(abstract_params)) == expected
  assert shapes_and_dtypes(jax.eval_shape(transform.init, abstract_params)) == expected


# --- checkpointing -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_orbax_round_trip_restores_named_tuple_state(method, tmp_path):
  transform = ALIASES[method]()
  _, state = run(transform, make_params())
  checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
  checkpointer.save(tmp_path / "state", args=ocp.args.StandardSave(state))
  abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = checkpointer.restore(tmp_path / "state", args=ocp.args.StandardRestore(abstract_state))
  expected_type = {"spam": ScaleBySpamState, "stable_spam": ScaleByStableSpamState}[method]
  assert type(restored[0]) is expected_type
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  chex.assert_trees_all_equal(restored, state)


# --- composition -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_chain_with_clipping_equals_running_on_clipped_gradients(method):
  clip = optax.clip_by_global_norm(0.5)
  chained, _ = run(optax.chain(clip, ALIASES[method]()), make_params())

  def clipped_gradients(params, step):
    grads, _ = clip.update(gradients(params, step), clip.init(params))
    return grads

  plain, _ = run(ALIASES[method](), make_params(), grads_fn=clipped_gradients)
  chex.assert_trees_all_close(chained, plain, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_masked_leaves_get_no_state_and_pass_through(method):
  masked = optax.masked(ALIASES[method](), {"w": True, "b": False})
  params = make_params()
  final_params, state = run(masked, params)
  assert isinstance(state.inner_state[0].mu["b"], optax.MaskedNode)
  # optax.masked leaves the masked-out updates as they came: the raw gradients.
  raw_sum = sum(gradients(params, i)["b"] for i in range(NUM_STEPS))
  chex.assert_trees_all_close(final_params["b"], params["b"] + raw_sum, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_learning_rate_schedule_is_followed(method):
  halving = lambda count: 1e-2 * 0.5**count
  scheduled, _ = run(ALIASES[method](learning_rate=halving), make_params(), num_steps=1)
  constant, _ = run(ALIASES[method](learning_rate=1e-2), make_params(), num_steps=1)
  chex.assert_trees_all_close(scheduled, constant)
  scheduled, _ = run(ALIASES[method](learning_rate=halving), make_params(), num_steps=2)
  constant, _ = run(ALIASES[method](learning_rate=1e-2), make_params(), num_steps=2)
  assert not np.allclose(scheduled["w"], constant["w"])


@pytest.mark.parametrize("method", METHODS)
def test_inject_hyperparams_matches_and_controls_the_learning_rate(method):
  # Every numeric argument (b1, eps, reset_interval, ...) becomes an array here.
  factory, settings = FACTORIES_AND_SETTINGS[method]
  injected = optax.inject_hyperparams(factory)(learning_rate=1e-2, **settings)
  plain_params, _ = run(ALIASES[method](learning_rate=1e-2), make_params())
  injected_params, state = run(injected, make_params())
  # Hyperparameters become float32 arrays (1 - b2 is then off by ~1e-5 relative).
  chex.assert_trees_all_close(injected_params, plain_params, rtol=1e-4, atol=1e-8)

  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  grads = gradients(injected_params, NUM_STEPS)
  updates, _ = jax.jit(injected.update)(grads, state, injected_params)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))


@pytest.mark.parametrize("method", METHODS)
def test_multisteps_equals_running_on_averaged_gradients(method):
  every = 2
  accumulated, _ = run(
      optax.MultiSteps(ALIASES[method](), every_k_schedule=every),
      make_params(),
      num_steps=every * NUM_STEPS,
  )

  def averaged_gradients(params, step):
    pair = [gradients(params, every * step + i) for i in range(every)]
    return jax.tree.map(lambda *g: sum(g) / every, *pair)

  plain, _ = run(ALIASES[method](), make_params(), grads_fn=averaged_gradients)
  chex.assert_trees_all_close(accumulated, plain, rtol=1e-5, atol=1e-7)


# --- reset semantics -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_reset_step_leaves_only_that_steps_gradient_in_the_moments(method):
  transform = SCALE_BYS[method]()
  params = make_params()
  state = transform.init(params)
  update = jax.jit(transform.update)
  for step in range(RESET_INTERVAL):
    grads = gradients(params, step)
    _, state = update(grads, state)
  # Both methods feed a (possibly rescaled) gradient g to Adam on the reset
  # step; with zeroed moments, mu = (1 - b1) g and nu = (1 - b2) g^2 exactly.
  mu, nu = state.mu["w"], state.nu["w"]
  fed_gradient = mu / (1 - 0.9)
  np.testing.assert_allclose(nu, (1 - 0.999) * fed_gradient**2, rtol=1e-4)
  assert int(state.count) == RESET_INTERVAL


def test_spam_clips_a_spike_to_the_threshold():
  threshold = 100.0
  transform = scale_by_spam(spike_threshold=threshold, reset_interval=100, spike_grace_steps=2)
  params = {"w": jnp.zeros(4)}
  state = transform.init(params)
  _, state = transform.update({"w": jnp.ones(4)}, state)
  nu_before = state.nu["w"]
  _, state = transform.update({"w": jnp.array([1.0, 1.0, -1e4, 1.0])}, state)
  clipped = -jnp.sqrt(threshold * nu_before[2])
  np.testing.assert_allclose(state.mu["w"][2], 0.9 * 0.1 + 0.1 * clipped, rtol=1e-6)


def test_stable_spam_gives_an_all_zero_gradient_leaf_a_zero_update():
  transform = scale_by_stable_spam()
  params = {"w": jnp.zeros(4)}
  state = transform.init(params)
  _, state = transform.update({"w": jnp.arange(4.0)}, state)
  updates, new_state = transform.update({"w": jnp.zeros(4)}, state)
  chex.assert_trees_all_equal(updates["w"], jnp.zeros(4))
  chex.assert_trees_all_equal(new_state.mu, state.mu)
  chex.assert_trees_all_equal(new_state.norm_ema, state.norm_ema)
