"""Step-time spikes of GaLore with and without the staggered refresh.

GaLore refreshes every projector (an SVD per matrix) every ``T`` steps; with
``ProjectionOptions(stagger=True)`` matrix ``j`` of ``n`` refreshes at the steps
``t = (j T) // n (mod T)`` instead, so the SVDs are spread over the gap. Step 0
refreshes every matrix under both schedules (every projector must exist), so the
spike statistics are taken over the ``rounds * T`` steps after it: each step is one
jitted update (state donated) on the 56 target matrices of LLaMA-60M, timed alone.
The table gives the median step, the slowest, their ratio (target: at most 1.5 with
staggering), the slowest of the steps where no matrix refreshes (the spread this
machine's noise alone gives) and the mean. Written to ``experiments/results/bench/stagger_bench.*``.

Usage::

  PYTHONPATH=. python experiments/bench/stagger_bench.py [--gaps 200] [--rounds 1]
      [--refreshes svd randomized]
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp

from experiments.bench import timing
from experiments.bench.optim_bench import LLAMA_60M, QUICK, random_tree, target_shapes
from lowrank_jax import optim


def step_times(stagger: bool, refresh: str, gap: int, rounds: int, rank: int, params,
               grads) -> list[float]:
    """Seconds of each of the ``rounds * gap`` steps after step 0 (compiled beforehand)."""
    tx = optim.galore(1e-3, rank=rank, update_proj_gap=gap,
                      options=optim.ProjectionOptions(stagger=stagger, refresh=refresh))
    state = jax.jit(tx.init)(params)
    update = jax.jit(tx.update, donate_argnums=1).lower(grads, state, params).compile()

    def step():
        nonlocal state
        _, state = update(grads, state, params)
        return state

    return [timing.timed(step)() for _ in range(rounds * gap + 1)][1:]


def refresh_steps(stagger: bool, gap: int, num_matrices: int, steps: int) -> set[int]:
    """The steps ``1 .. steps`` at which some matrix refreshes."""
    residues = set(optim.projection.stagger_offsets(num_matrices, 0, num_matrices, gap,
                                                    stagger).tolist())
    return {t for t in range(1, steps + 1) if t % gap in residues}


def spike_columns(times: list[float], refreshing: set[int]) -> list[str]:
    """Median, slowest, their ratio, the slowest step without any refresh (how far this
    machine's noise alone spreads the steps), and the mean; ``times[i]`` is step ``i + 1``."""
    median, slowest = statistics.median(times), max(times)
    quiet = max((t for step, t in enumerate(times, 1) if step not in refreshing),
                default=float("nan"))
    return [f"{1e3 * median:.0f}", f"{1e3 * slowest:.0f}", f"{slowest / median:.2f}",
            f"{1e3 * quiet:.0f}", f"{quiet / median:.2f}", f"{1e3 * statistics.mean(times):.0f}"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaps", type=int, nargs="+", default=[200], help="refresh periods T")
    parser.add_argument("--rounds", type=int, default=1, help="steps timed = rounds * T")
    parser.add_argument("--refreshes", nargs="+", default=["svd", "randomized"],
                        choices=["svd", "eigh", "randomized"], help="refresh kinds to time")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    shape = QUICK if args.quick else LLAMA_60M
    shapes = target_shapes(shape)
    params, grads = random_tree(shapes, jnp.float32, 0), random_tree(shapes, jnp.float32, 1)
    rows, record = [], {}
    for gap in args.gaps:
        for refresh in args.refreshes:
            for stagger in (False, True):
                times = step_times(stagger, refresh, gap, args.rounds, shape.rank, params, grads)
                record[f"T={gap} refresh={refresh} stagger={stagger}"] = times
                refreshing = refresh_steps(stagger, gap, len(jax.tree.leaves(params)),
                                           len(times))
                rows.append([gap, refresh, "staggered" if stagger else "all at once",
                             *spike_columns(times, refreshing)])
                print(f"measured T={gap} {refresh} stagger={stagger}", flush=True)
    header = ["T", "refresh", "schedule", "median step ms", "slowest step ms",
              "slowest / median", "slowest without refresh ms", "its / median", "mean step ms"]
    timing.write_report(
        "stagger_bench_quick" if args.quick else "stagger_bench",
        f"GaLore step-time spikes, {len(jax.tree.leaves(params))} LLaMA target matrices, "
        f"rank {shape.rank}, {args.rounds} T steps after step 0", [],
        header, rows, {"args": vars(args), "step_seconds": record})


if __name__ == "__main__":
    main()
