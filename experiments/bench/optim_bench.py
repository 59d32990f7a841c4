"""Side-by-side cost of every optimizer on the 60M LLaMA target matrices.

The 56 target matrices of LLaMA-60M (8 layers of q, k, v, o as (512, 512)
kernels, gate and up as (512, 1376), down as (1376, 512); Flax (in, out)
layout) are the whole parameter tree, so every matrix is projected. For each
method the table gives:

* steady: the jitted update (state donated) on a step without refresh, median of
  ``--repeats`` steps after warm-up;
* refresh: the first update, which refreshes every projector (SVD or random),
  median of ``--refresh-repeats`` runs (default 1: a CPU refresh of the 60M
  matrices takes many seconds) after one untimed run, each from a fresh copy
  of the initial state;
* amortised: ``(refresh + (T - 1) * steady) / T`` with ``T = --gap``, the cost
  per step over one refresh period (SPAM's and Stable-SPAM's resets are a
  select inside every step, so for them and for AdamW it equals steady);
* state: bytes of the optimizer state (from ``jax.eval_shape``, nothing allocated).

Below the table, the floor: the projection matmuls alone (``R = P^T G`` and
the back-projection ``P R`` for all matrices, ``4 m n r`` flops each), timed as
one jitted function, and the same flops at the rate of a large square matmul.

GaLore also gets a row with the randomized range finder as its refresher
(``ProjectionOptions(refresh="randomized")``), the cheaper alternative to SVD.
Methods of ``lowrank_jax.optim`` that are not importable (yet) are skipped with
a note; a method that fails at run time is reported and skipped too. Note that
``optax.contrib.galore`` projects the larger side of each matrix (paper.md,
section 3), hence its smaller state.

Usage::

  PYTHONPATH=. python experiments/bench/optim_bench.py [--quick] [--repeats 5]
      [--refresh-repeats 1] [--rank 128] [--gap 200] [--dtype float32]
      [--markdown table.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

LEARNING_RATE = 1e-3  # irrelevant to the timings; any valid value
GOLORE_TOTAL_STEPS = 10_000  # the 60M run's length; GoLore switches to random projectors late


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
    block = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "gate": (h, f), "up": (h, f), "down": (f, h)}
    return {f"layer_{i}": dict(block) for i in range(shape.layers)}


def random_tree(shapes, dtype, seed: int):
    """A tree of N(0, 0.02) arrays with the given leaf shapes."""
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten(
        [0.02 * jax.random.normal(k, s, jnp.float32).astype(dtype) for k, s in zip(keys, leaves)]
    )


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median wall time of ``fn()`` (which returns arrays to wait for) after ``warmup`` calls."""
    times = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


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
    """Factories of the transforms to compare, and notes on the skipped ones."""
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
    if "galore" in methods and hasattr(optim, "ProjectionOptions"):
        randomized = optim.ProjectionOptions(refresh="randomized")
        methods["galore (randomized refresh)"] = lambda: optim.galore(
            LEARNING_RATE, rank=rank, update_proj_gap=gap, options=randomized
        )
    return methods, notes


@dataclasses.dataclass
class Measurement:
    """One method's row: seconds per update and bytes of optimizer state."""

    steady_s: float
    refresh_s: float
    amortised_s: float
    state_bytes: int


def measure(transform, params, grads, gap: int, repeats: int, refresh_repeats: int):
    """Times ``transform.update`` on refresh and steady steps; sizes its state."""
    abstract_state = jax.eval_shape(transform.init, params)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
    update = jax.jit(transform.update, donate_argnums=1)
    initial_state = jax.jit(transform.init)(params)
    # Every refresh run starts from its own copy of the initial state (it is donated);
    # the first, untimed, run compiles and warms the linear-algebra kernels up.
    initial_copies = iter(
        [jax.tree.map(jnp.copy, initial_state) for _ in range(refresh_repeats + 1)]
    )
    state = None

    def step(previous_state):
        nonlocal state
        updates, state = update(grads, previous_state, params)
        return updates, state

    refresh = median_seconds(lambda: step(next(initial_copies)), refresh_repeats, warmup=1)
    steady = median_seconds(lambda: step(state), repeats, warmup=2)
    return Measurement(steady, refresh, (refresh + (gap - 1) * steady) / gap, state_bytes)


def projection_flops(shapes, rank: int) -> int:
    return sum(4 * m * n * rank for m, n in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)))


def projection_floor_seconds(grads, rank: int, repeats: int) -> float:
    """Median time of ``R = P^T G`` and ``P R`` on the smaller side of every matrix."""
    projectors = jax.tree.map(
        lambda g: jnp.ones((min(g.shape), rank), g.dtype) / rank**0.5, grads
    )

    def project_and_back(g, p):
        if g.shape[0] <= g.shape[1]:
            return p @ (p.T @ g)
        return (g @ p) @ p.T

    floor = jax.jit(lambda gs, ps: jax.tree.map(project_and_back, gs, ps))
    jax.block_until_ready(floor(grads, projectors))
    return median_seconds(lambda: floor(grads, projectors), repeats)


def peak_matmul_flops_per_second(dtype, repeats: int, size: int = 2048) -> float:
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    return 2 * size**3 / median_seconds(lambda: matmul(a), repeats)


def markdown_table(results: dict[str, Measurement], gap: int) -> str:
    baseline = results.get("optax.adamw")
    lines = [
        f"| method | steady ms/step | refresh-step ms | amortised ms/step (T={gap}) "
        "| state MiB | state / AdamW |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        relative = f"{r.state_bytes / baseline.state_bytes:.3f}" if baseline else "n/a"
        lines.append(
            f"| {name} | {1e3 * r.steady_s:.2f} | {1e3 * r.refresh_s:.2f} | "
            f"{1e3 * r.amortised_s:.2f} | {r.state_bytes / 2**20:.2f} | {relative} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (2 layers, hidden 64), for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (>= 1)")
    parser.add_argument(
        "--refresh-repeats", type=int, default=1,
        help="timed refresh steps per method (each runs every SVD; median)",
    )
    parser.add_argument("--rank", type=int, default=None, help="projection rank (default 128; 16 with --quick)")
    parser.add_argument("--gap", type=int, default=200, help="refresh period T of the projected methods")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="params and grads dtype")
    parser.add_argument("--markdown", default=None, help="also write the report to this markdown file")
    args = parser.parse_args()
    if min(args.repeats, args.refresh_repeats, args.gap, args.rank or 1) < 1:
        parser.error("--repeats, --refresh-repeats, --gap and --rank must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    shape = QUICK if args.quick else LLAMA_60M
    rank = args.rank or shape.rank
    dtype = jnp.dtype(args.dtype)
    shapes = target_shapes(shape)
    params = random_tree(shapes, dtype, seed=0)
    grads = random_tree(shapes, dtype, seed=1)
    num_matrices = len(jax.tree.leaves(params))

    methods, notes = candidate_methods(rank, args.gap)
    results = {}
    for name, factory in methods.items():
        try:
            results[name] = measure(
                factory(), params, grads, args.gap, args.repeats, args.refresh_repeats
            )
        except Exception as error:  # report and go on: the other methods still count
            notes.append(f"{name} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
        print(f"measured {name}", flush=True)

    flops = projection_flops(shapes, rank)
    floor = projection_floor_seconds(grads, rank, args.repeats)
    peak = peak_matmul_flops_per_second(dtype, args.repeats)
    device = jax.devices()[0]
    report = "\n".join(
        [
            f"## Optimizer update cost, {num_matrices} LLaMA target matrices "
            f"(hidden {shape.hidden}, intermediate {shape.intermediate}, {shape.layers} layers), "
            f"rank {rank}, gap {args.gap}, {args.dtype}",
            "",
            f"device: {device.platform} {device.device_kind} x{jax.device_count()}, "
            f"jax {jax.__version__}, optax {optax.__version__}, "
            f"median of {args.repeats} steady and {args.refresh_repeats} refresh steps",
            "",
            markdown_table(results, args.gap),
            "",
            f"Projection floor ({flops / 1e9:.2f} GFLOP: P^T G and back for all {num_matrices} matrices): "
            f"{1e3 * floor:.2f} ms measured ({flops / floor / 1e9:.1f} GFLOP/s); "
            f"{1e3 * flops / peak:.2f} ms at the {peak / 1e9:.1f} GFLOP/s of a 2048^2 matmul.",
            *(f"- note: {note}" for note in notes),
        ]
    )
    print(report)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    main()
