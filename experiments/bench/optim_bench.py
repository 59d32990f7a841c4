"""Side-by-side cost of every optimizer on the 60M LLaMA target matrices, with the
PyTorch references (galore-torch, fira, apollo-torch) and each update's floor.

The 56 target matrices of LLaMA-60M (8 layers of q, k, v, o as (512, 512)
kernels, gate and up as (512, 1376), down as (1376, 512); Flax (in, out)
layout; the PyTorch references get the (out, in) transposes) are the whole
parameter tree, so every matrix is projected. For each method the table gives:

* steady: one optimizer step without refresh: the update and its application to the
  weights, as PyTorch's ``optimizer.step()`` does (JAX: one jitted function, state and
  weights donated), median of ``--repeats`` steps after warm-up;
* refresh: the first update, which refreshes every projector (SVD or random),
  median of ``--refresh-repeats`` runs after one untimed run, each from a fresh
  initial state (a fresh PyTorch optimizer);
* amortised: ``(refresh + (T - 1) * steady) / T`` with ``T = --gap``, the cost
  per step over one refresh period (SPAM's and Stable-SPAM's resets are a
  select inside every step, so for them and for AdamW it equals steady);
* floor: the projection products the update cannot avoid, timed in this run as
  one jitted function of plain matmuls (:func:`timing.matmul_seconds`): two per
  matrix for the GaLore family (``R = P^T G`` and the back-projection ``P N``),
  one for APOLLO (``R = P^T G``; its update is the rescaled gradient);
* reference / ours: the PyTorch reference's amortised time over ours;
* state: bytes of the optimizer state (from ``jax.eval_shape``).

Methods of ``lowrank_jax.optim`` that are not importable are skipped with a note;
a method that fails at run time is reported and skipped too. ``optax.contrib.galore``
projects the larger side of each matrix (arXiv 2505.22922, methods survey), hence its smaller
state. The table and a JSON record go to ``experiments/results/bench/optim_bench.*``.

Usage::

  PYTHONPATH=. python experiments/bench/optim_bench.py [--quick] [--repeats 5]
      [--refresh-repeats 5] [--rank 128] [--gap 200] [--stacked] [--only galore fira ...]

On a GPU the PyTorch references run on it too (CUDA-synchronised timings).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from experiments.bench import timing

LEARNING_RATE = 1e-3  # irrelevant to the timings; any valid value
GOLORE_TOTAL_STEPS = 10_000  # the 60M run's length; GoLore switches to random projectors late
STACKED = " [stacked]"  # suffix of the rows measured on the layer-stacked tree
REFERENCES = {
    "galore": "galore-torch",
    "fira": "fira (torch)",
    "apollo": "apollo_torch",
    "apollo (stored projector)": "apollo_torch",
}


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """The LLaMA dimensions that fix the target matrices."""

  hidden: int
  intermediate: int
  layers: int
  rank: int


LLAMA_60M = ModelShape(hidden=512, intermediate=1376, layers=8, rank=128)
QUICK = ModelShape(hidden=64, intermediate=176, layers=2, rank=16)


def target_shapes(shape: ModelShape) -> dict[str, dict[str, tuple[int, int]]]:
  """Flax ``(in, out)`` kernel shapes of the seven linears of every block."""
  h, f = shape.hidden, shape.intermediate
  block = {
      "q": (h, h),
      "k": (h, h),
      "v": (h, h),
      "o": (h, h),
      "gate": (h, f),
      "up": (h, f),
      "down": (f, h),
  }
  return {f"layer_{i}": dict(block) for i in range(shape.layers)}


def stack_layers(tree):
  """The per-layer tree ``{layer_i: {name: x}}`` as ``{name: stacked x}`` with a leading
  layers axis: the layout of a scanned model (``LlamaConfig(scan_layers=True)``)."""
  return jax.tree.map(lambda *layers: jnp.stack(layers), *tree.values())


def shape_list(shapes) -> list[tuple[int, int]]:
  return jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))


def random_tree(shapes, dtype, seed: int):
  """A tree of N(0, 0.02) arrays with the given leaf shapes."""
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
      [0.02 * jax.random.normal(k, s, jnp.float32).astype(dtype) for k, s in zip(keys, leaves)]
  )


def lowrank_method_arguments(rank: int, gap: int) -> dict[str, dict]:
  """Arguments (besides the learning rate) of each ``lowrank_jax.optim`` method."""
  projected = dict(rank=rank, update_proj_gap=gap)
  return {
      "galore": projected,
      "fira": projected,
      "apollo": projected,
      "apollo_mini": dict(update_proj_gap=gap),  # rank 1 by definition
      "golore": dict(projected, total_steps=GOLORE_TOTAL_STEPS),
      "spam": {},  # full-rank: resets every 500 steps, a select inside each step
      "stable_spam": {},
  }


def candidate_methods(rank: int, gap: int) -> tuple[dict[str, Callable], list[str]]:
  """Factories of the JAX transforms to compare, and notes on the skipped ones."""
  methods = {
      "optax.adamw": lambda: optax.adamw(LEARNING_RATE),
      "optax.contrib.galore": lambda: optax.contrib.galore(
          LEARNING_RATE, rank=rank, update_proj_gap=gap
      ),
  }
  notes = []
  try:
    optim = importlib.import_module("lowrank_jax.optim")
  except Exception as error:  # an in-progress package may fail in many ways
    return methods, [f"lowrank_jax.optim not importable ({error!r}): all its methods skipped"]
  for name, kwargs in lowrank_method_arguments(rank, gap).items():
    factory = getattr(optim, name, None)
    if factory is None:
      notes.append(f"lowrank_jax.optim.{name} not available yet: skipped")
      continue
    methods[name] = lambda factory=factory, kwargs=kwargs: factory(LEARNING_RATE, **kwargs)
  if "apollo" in methods:
    methods["apollo (stored projector)"] = lambda: optim.apollo(
        LEARNING_RATE, rank=rank, update_proj_gap=gap, store_projector=True
    )
  if "galore" in methods and hasattr(optim, "ProjectionOptions"):
    variants = {
        "randomized refresh": optim.ProjectionOptions(refresh="randomized"),
        "leaves grouped": optim.ProjectionOptions(group_leaves=True),
        "leaves separate": optim.ProjectionOptions(group_leaves=False),
    }
    for variant, options in variants.items():
      methods[f"galore ({variant})"] = lambda options=options: optim.galore(
          LEARNING_RATE, rank=rank, update_proj_gap=gap, options=options
      )
  return methods, notes


def reference_methods(rank: int, gap: int) -> dict[str, Callable]:
  """Factories ``weights -> torch optimizer`` of the PyTorch references (importable ones)."""
  group = dict(rank=rank, update_proj_gap=gap, proj_type="std")
  factories = {
      "torch.optim.AdamW": ("torch", lambda m, w: m.optim.AdamW(w, lr=LEARNING_RATE)),
      "galore-torch": (
          "galore_torch",
          lambda m, w: m.GaLoreAdamW(
              [dict(group, params=w, scale=0.25)], lr=LEARNING_RATE, no_deprecation_warning=True
          ),
      ),
      "fira (torch)": (
          "fira",
          lambda m, w: m.FiraAdamW(
              [dict(group, params=w, alpha=0.25)], lr=LEARNING_RATE, no_deprecation_warning=True
          ),
      ),
      "apollo_torch": (
          "apollo_torch",
          lambda m, w: m.APOLLOAdamW(
              [dict(group, params=w, proj="random", scale=1.0, scale_type="channel")],
              lr=LEARNING_RATE,
          ),
      ),
  }
  available = {}
  for name, (module, make) in factories.items():
    try:
      available[name] = lambda module=importlib.import_module(module), make=make: (
          lambda weights: make(module, weights)
      )
    except ImportError:
      pass
  return available


@dataclasses.dataclass
class Measurement:
  """One method's row: seconds per update and bytes of optimizer state."""

  steady_s: float
  refresh_s: float
  amortised_s: float
  state_bytes: int | None


@dataclasses.dataclass
class Contender:
  """Timed runs of one method: a fresh first (refresh) step and a steady step."""

  refresh: Callable[[], float]
  steady: Callable[[], float]
  state_bytes: int | None = None


def jax_contender(transform, params, grads) -> Contender:
  """One optimizer step, ``transform.update`` then ``optax.apply_updates``, jitted with the
  state and the parameters donated (what ``optimizer.step()`` does to a PyTorch model's
  weights), compiled and warmed up here."""
  abstract_state = jax.eval_shape(transform.init, params)

  def apply(grads, state, params):  # outputs in the donated inputs' order: each aliases its own
    updates, state = transform.update(grads, state, params)
    return state, optax.apply_updates(params, updates)

  update = jax.jit(apply, donate_argnums=(1, 2))
  init = jax.jit(transform.init)
  weights = jax.tree.map(jnp.copy, params)  # donated at every step: the caller's stay
  state = None

  def step(previous_state):
    nonlocal state, weights
    state, weights = update(grads, previous_state, weights)
    return state, weights

  def refresh() -> float:
    initial = jax.block_until_ready(init(params))  # a fresh state, not timed
    return timing.timed(lambda: step(initial))()

  refresh()  # compiles and warms the linear-algebra kernels up
  steady = timing.timed(lambda: step(state))
  steady()
  return Contender(
      refresh, steady, sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
  )


def torch_contender(make_optimizer, params, grads) -> Contender:
  """A PyTorch optimizer on the transposed weights; a fresh one for every refresh run."""
  import numpy as np
  import torch

  device = timing.torch_device()
  weights = [
      torch.nn.Parameter(torch.from_numpy(np.array(p).T.copy()).to(device))
      for p in jax.tree.leaves(params)
  ]
  for w, g in zip(weights, jax.tree.leaves(grads)):
    w.grad = torch.from_numpy(np.array(g).T.copy()).to(device)
  optimizer = None

  def refresh() -> float:
    nonlocal optimizer
    optimizer = make_optimizer(weights)
    timing.torch_sync()
    return timing.timed(optimizer.step, sync=timing.torch_sync)()

  refresh()
  steady = timing.timed(lambda: optimizer.step(), sync=timing.torch_sync)
  steady()
  return Contender(refresh, steady)


def measure_all(
    contenders: dict[str, Contender],
    floors: dict[str, Callable[[], float]],
    gap: int,
    repeats: int,
    refresh_repeats: int,
):
  """Interleaved medians of every contender's refresh and steady step, and of the floors."""
  refresh = timing.interleaved_medians(
      {k: c.refresh for k, c in contenders.items()}, refresh_repeats
  )
  steady = timing.interleaved_medians(
      {**{k: c.steady for k, c in contenders.items()}, **floors}, repeats
  )
  results = {
      k: Measurement(
          steady[k], refresh[k], (refresh[k] + (gap - 1) * steady[k]) / gap, c.state_bytes
      )
      for k, c in contenders.items()
  }
  return results, {k: steady[k] for k in floors}


def projection_products(shapes, rank: int, back: bool) -> list:
  """The matmul operand shapes of ``R = P^T G`` (and of ``P N`` if ``back``), smaller side."""
  pairs = []
  for m, n in shape_list(shapes):
    if m <= n:  # project the input axis: R = P^T G is (r, n); P N is (m, n)
      pairs.append(((rank, m), (m, n)))
      pairs += [((m, rank), (rank, n))] if back else []
    else:  # project the output axis: R = G P is (m, r); N P^T is (m, n)
      pairs.append(((m, n), (n, rank)))
      pairs += [((m, rank), (rank, n))] if back else []
  return pairs


def floor_kind(name: str) -> str | None:
  """Which floor a row is held to: ``"two"`` products, ``"one"`` or None."""
  if name.startswith(("apollo", "torch.optim", "optax.adamw", "spam", "stable_spam")):
    return "one" if name.startswith("apollo") else None
  return "two"


def report_rows(results: dict[str, Measurement], floors: dict[str, float], gap: int) -> list:
  baseline = results.get("optax.adamw")
  rows = []
  for name, r in results.items():
    kind = floor_kind(name)
    floor = floors.get(f"{kind}-{'mini' if 'mini' in name else 'rank'}") if kind else None
    reference = results.get(REFERENCES.get(name.removesuffix(STACKED), ""))
    rows.append(
        [
            name,
            f"{1e3 * r.steady_s:.1f}",
            f"{1e3 * r.refresh_s:.0f}",
            f"{1e3 * r.amortised_s:.1f}",
            f"{1e3 * floor:.1f}" if floor else "-",
            f"{r.amortised_s / floor:.2f}" if floor else "-",
            f"{reference.amortised_s / r.amortised_s:.2f}" if reference else "-",
            f"{r.state_bytes / 2**20:.1f}" if r.state_bytes else "-",
            f"{r.state_bytes / baseline.state_bytes:.3f}" if r.state_bytes and baseline else "-",
        ]
    )
  return rows


def reference_device() -> str:
  try:
    return str(timing.torch_device())
  except ImportError:
    return "-"


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--quick", action="store_true", help="tiny shapes (2 layers, hidden 64), for a smoke test"
  )
  parser.add_argument("--repeats", type=int, default=5, help="timed steady steps per method (>= 1)")
  parser.add_argument(
      "--refresh-repeats",
      type=int,
      default=5,
      help="timed refresh steps per method (each runs every SVD; median)",
  )
  parser.add_argument(
      "--rank", type=int, default=None, help="projection rank (default 128; 16 with --quick)"
  )
  parser.add_argument(
      "--gap", type=int, default=200, help="refresh period T of the projected methods"
  )
  parser.add_argument("--name", default=None, help="results file name (default optim_bench)")
  parser.add_argument(
      "--stacked",
      action="store_true",
      help=f"also time every JAX method on the layer-stacked tree (rows '<name>{STACKED}')",
  )
  parser.add_argument(
      "--only", nargs="*", default=None, help="measure only these rows (names as printed)"
  )
  args = parser.parse_args()
  if min(args.repeats, args.refresh_repeats, args.gap, args.rank or 1) < 1:
    parser.error("--repeats, --refresh-repeats, --gap and --rank must be >= 1")
  return args


def main() -> None:
  args = parse_args()
  shape = QUICK if args.quick else LLAMA_60M
  rank = args.rank or shape.rank
  shapes = target_shapes(shape)
  params = random_tree(shapes, jnp.float32, seed=0)
  grads = random_tree(shapes, jnp.float32, seed=1)
  num_matrices = len(jax.tree.leaves(params))
  try:
    import torch

    torch.set_num_threads(2)
  except ImportError:
    pass

  methods, notes = candidate_methods(rank, args.gap)
  makers = {name: (jax_contender, factory, params, grads) for name, factory in methods.items()}
  if args.stacked:
    stacked = stack_layers(params), stack_layers(grads)
    makers.update(
        {name + STACKED: (jax_contender, factory, *stacked) for name, factory in methods.items()}
    )
  makers.update(
      {
          name: (torch_contender, factory, params, grads)
          for name, factory in reference_methods(rank, args.gap).items()
      }
  )
  contenders = {}
  for name, (make, factory, weights, gradients) in makers.items():
    if args.only and name not in args.only:
      continue
    try:
      contenders[name] = make(factory(), weights, gradients)
    except Exception as error:  # report and go on: the other methods still count
      notes.append(f"{name} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
    print(f"prepared {name}", flush=True)
  floor_runs = {
      f"{kind}-{which}": timing.matmul_products(projection_products(shapes, r, back=kind == "two"))
      for kind in ("one", "two")
      for which, r in (("rank", rank), ("mini", 1))
  }
  results, floors = measure_all(
      contenders, floor_runs, args.gap, args.repeats, args.refresh_repeats
  )
  header = [
      "method",
      "steady ms",
      "refresh ms",
      f"amortised ms (T={args.gap})",
      "floor ms",
      "amortised / floor",
      "reference / ours",
      "state MiB",
      "state / AdamW",
  ]
  rows = report_rows(results, floors, args.gap)
  timing.write_report(
      args.name or ("optim_bench_quick" if args.quick else "optim_bench"),
      f"Optimizer update, {num_matrices} LLaMA target matrices (hidden {shape.hidden}, "
      f"intermediate {shape.intermediate}, {shape.layers} layers), rank {rank}, "
      f"T = {args.gap}, fp32",
      [
          f"device: {jax.devices()[0].device_kind} (PyTorch on {reference_device()}); interleaved medians of {args.repeats} steady "
          f"and {args.refresh_repeats} refresh steps; floor = the projection matmuls alone "
          "(GaLore family two per matrix, APOLLO one), timed in this run",
          *(f"- note: {note}" for note in notes),
      ],
      header,
      rows,
      {
          "args": vars(args),
          "floors_s": floors,
          "notes": notes,
          "results": {k: dataclasses.asdict(v) for k, v in results.items()},
      },
  )


if __name__ == "__main__":
  main()
