r"""GoLore: GaLore whose projector turns random late in training.

Until step ``random_from_step`` GoLore is GaLore (SVD projectors refreshed
every ``update_proj_gap`` steps); from then on each refresh draws a uniformly
random orthonormal projector (the Q of a Gaussian matrix's QR), which makes
the subspace method converge under noisy gradients. On a projector change (after
the first step) the step's update reads the first moment re-projected into the
new basis, but the state keeps the one from before the step, neither
re-projected nor updated, as the reference does (pkumelon/Golore's
``peft_pretraining/golore_torch/adamw.py``, lines 108-114, bind the re-projected
moment to a local only); the second moment is updated as on any step:

.. math::
  \tilde M = b_1 P_\text{new}^\top P_\text{old} M + (1 - b_1) R, \qquad
  N = \tilde M / (\sqrt{V} + \epsilon), \qquad M \leftarrow M.

So the stored first moment stays in the old basis and misses the refresh step's
gradient (moment policy ``"reproject_once"``); the policy ``"reproject"``
(``options=ProjectionOptions(moment_policy="reproject")``) stores :math:`\tilde M`
instead.

The switch step is ``random_from_step`` if given, else
:math:`\lceil \text{rand\_ratio} \cdot \text{total\_steps} \rceil`: as the
reference's ``--rand_ratio`` flag, ``rand_ratio`` is the fraction of training
*before* the switch (a refresh at the 0-based step :math:`t` is random once
:math:`t \ge \text{rand\_ratio} \cdot \text{total\_steps}`, the product in floating
point, as the reference's optimizer tests ``state["step"] >= rand_epoch``,
``torchrun_main.py`` and ``golore_torch/adamw.py``; GoLore's own script,
``script/Go_pt.sh`` of pkumelon/Golore, uses 0.8). Defaults are the reference's
(``GoLoreProjector``'s ``scale=1``, ``GoLoreAdamW``'s ``eps=1e-6``).

References:
  He et al., Subspace Optimization for Large Language Models with Convergence
  Guarantees, https://arxiv.org/abs/2410.11289

>>> import jax.numpy as jnp
>>> tx = golore(learning_rate=0.01, rank=2, update_proj_gap=4, total_steps=100)
>>> state = tx.init({"w": jnp.ones((8, 16))})
>>> state[0].inner_states["projected"].inner_state.projector["w"].shape
(8, 2)
"""

import math

import optax

from lowrank_jax.optim.galore import galore_method
from lowrank_jax.optim._projection.lowrank_adam import scale_by_projected_method
from lowrank_jax.optim.adam import with_decoupled_weight_decay
from lowrank_jax.optim._checks import check_positive_int, check_range


def switch_step(total_steps: int | None, rand_ratio: float, random_from_step: int | None) -> int:
  """The first step whose refresh is random (see the module docstring)."""
  if random_from_step is not None:
    return check_positive_int("random_from_step + 1", random_from_step + 1) - 1
  if total_steps is None:
    raise ValueError(
        "golore needs total_steps (with rand_ratio) or random_from_step, " "got neither."
    )
  total_steps = check_positive_int("total_steps", total_steps)
  check_range("rand_ratio", rand_ratio, 0.0)
  # The first step passing the reference's own float test, step >= rand_ratio * total_steps.
  return math.ceil(rand_ratio * total_steps)


def scale_by_golore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    total_steps: int | None = None,
    rand_ratio: float = 0.8,
    random_from_step: int | None = None,
) -> optax.GradientTransformation:
  r"""GoLore's rescaling of the gradients (no learning rate, no weight decay).

  GaLore's update, ``u = alpha (sqrt(1 - b2^t) / (1 - b1^t)) P M / (sqrt(V) + eps)``, whose
  refreshes draw a uniformly random orthonormal ``P`` from the switch step on (SVD before),
  with the first moment re-projected for the refresh step only (see the module docstring).

  Args:
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix (checked at init); list it in ``static_args`` of ``optax.inject_hyperparams``.
    update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
    scale: ``alpha``, multiplies the projected-back update (>= 0; the reference's 1).
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    projection_mask: which leaves are projected: None (every leaf with ndim >= 2), a pytree of
      bools, or a callable on the params; the others get the references' Adam.
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions`; None: ``refresh="svd"`` before
      the switch, ``moment_policy="reproject_once"``.
    total_steps: the length of training, used with ``rand_ratio``.
    rand_ratio: fraction of the training before the switch to random projectors (>= 0; 1 or
      more: never), the reference's ``--rand_ratio``.
    random_from_step: the switch step itself (overrides the two above).

  Returns:
    An ``optax.GradientTransformation`` (state as :func:`scale_by_galore`'s).

  >>> import jax.numpy as jnp
  >>> state = scale_by_golore(rank=2, random_from_step=10).init({"w": jnp.ones((8, 16))})
  >>> state.inner_states["projected"].inner_state.projector["w"].shape
  (8, 2)
  """
  check_range("scale", scale, 0.0)
  return scale_by_projected_method(
      galore_method(scale),
      rank=rank,
      update_proj_gap=update_proj_gap,
      b1=b1,
      b2=b2,
      eps=eps,
      projection_mask=projection_mask,
      moment_dtype=moment_dtype,
      options=options,
      default_refresh="svd",
      default_moment_policy="reproject_once",
      random_from_step=switch_step(total_steps, rand_ratio, random_from_step),
  )


def golore(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask=None,
    projection_mask=None,
    moment_dtype=None,
    options=None,
    total_steps: int | None = None,
    rand_ratio: float = 0.8,
    random_from_step: int | None = None,
) -> optax.GradientTransformation:
  r"""GoLore-AdamW: ``chain(scale_by_golore, add_decayed_weights, scale_by_learning_rate)``.

  The parameter moves by ``-learning_rate * (u + weight_decay * p)`` with ``u`` the update of
  :func:`scale_by_golore`, GaLore's with random projectors from the switch step on.

  Args:
    learning_rate: a float or an optax schedule.
    rank: projection rank ``r`` (a Python int), at most the smaller side of every projected
      matrix.
    update_proj_gap: refresh the projectors every this many steps (Python int >= 1).
    scale: ``alpha`` (the reference's 1), >= 0.
    b1: Adam's first-moment decay, in [0, 1).
    b2: Adam's second-moment decay, in [0, 1).
    eps: added to ``sqrt(V)`` (the references' placement), >= 0.
    weight_decay: decoupled weight decay (``p -= lr * wd * p``), >= 0.
    mask: the leaves weight decay applies to, as optax's ``mask``; None decays every leaf.
    projection_mask: which leaves are projected (None: every leaf with ndim >= 2).
    moment_dtype: storage dtype of all Adam moments; None keeps each parameter's dtype.
    options: :class:`~lowrank_jax.optim.ProjectionOptions`; None: GoLore's defaults.
    total_steps: the length of training, used with ``rand_ratio``.
    rand_ratio: fraction of the training before the switch to random projectors (>= 0).
    random_from_step: the switch step itself (overrides the two above).

  Returns:
    An ``optax.GradientTransformation``.
  """
  return with_decoupled_weight_decay(
      scale_by_golore(
          rank,
          update_proj_gap,
          scale,
          b1=b1,
          b2=b2,
          eps=eps,
          projection_mask=projection_mask,
          moment_dtype=moment_dtype,
          options=options,
          total_steps=total_steps,
          rand_ratio=rand_ratio,
          random_from_step=random_from_step,
      ),
      learning_rate,
      weight_decay,
      mask,
  )
