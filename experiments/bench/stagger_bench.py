"""Step-time spikes of GaLore with and without the staggered refresh.

GaLore refreshes every projector (an SVD per matrix) every ``T`` steps; with
``ProjectionOptions(stagger=True)`` matrix ``j`` of ``n`` refreshes at the steps
``t = (j T) // n (mod T)`` instead, so the SVDs are spread over the gap. Step 0
refreshes every matrix under both schedules (every projector must exist), so the
statistics are taken over the ``rounds * T`` steps after it: each step is one
jitted update (state donated) on the 56 target matrices of LLaMA-60M, timed alone.

A refresh repeats at the same phase ``t mod T`` of every round, while this
machine's own hiccups (another process, a page fault, the VM's host) land
anywhere. So besides the raw slowest step, the table gives the *phase profile*:
each phase's median over the rounds, which keeps the refresh spikes and drops
the random ones. Its slowest phase over the median step is the spike measure
(target: at most 1.5 with staggering); the slowest phase with no refresh shows
the noise left after the median. The profiles are also plotted
(``stagger_bench.png``). Written to ``experiments/results/bench/stagger_bench.*``.

Usage::

  PYTHONPATH=. python experiments/bench/stagger_bench.py [--gaps 200] [--rounds 5]
      [--refreshes svd randomized]
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import jax.numpy as jnp

from experiments.bench import timing
from experiments.bench.optim_bench import LLAMA_60M, QUICK, random_tree, target_shapes
from lowrank_jax import optim
from lowrank_jax.optim._projection import refresh_schedule


def step_times(
    stagger: bool, refresh: str, gap: int, rounds: int, rank: int, params, grads
) -> list[float]:
  """Seconds of each of the ``rounds * gap`` steps after step 0 (compiled beforehand)."""
  tx = optim.galore(
      1e-3,
      rank=rank,
      update_proj_gap=gap,
      options=optim.ProjectionOptions(stagger=stagger, refresh=refresh),
  )
  state = jax.jit(tx.init)(params)
  update = jax.jit(tx.update, donate_argnums=1).lower(grads, state, params).compile()

  def step():
    nonlocal state
    _, state = update(grads, state, params)
    return state

  return [timing.timed(step)() for _ in range(rounds * gap + 1)][1:]


def refresh_phases(stagger: bool, gap: int, num_matrices: int) -> set[int]:
  """The phases ``t mod gap`` at which some matrix refreshes."""
  return set(refresh_schedule.stagger_offsets(num_matrices, 0, num_matrices, gap, stagger).tolist())


def phase_profile(times: list[float], gap: int) -> list[float]:
  """Each phase's median over the rounds; ``times[i]`` is step ``i + 1``."""
  by_phase = [[] for _ in range(gap)]
  for step, seconds in enumerate(times, 1):
    by_phase[step % gap].append(seconds)
  return [statistics.median(samples) for samples in by_phase]


def spike_columns(times: list[float], profile: list[float], refreshing: set[int]) -> list[str]:
  """Median step, the raw slowest step over it, the slowest phase over it (the spike
  measure), the slowest phase without any refresh over it (the noise the median
  leaves), and the mean step."""
  median = statistics.median(times)
  quiet = max(
      (t for phase, t in enumerate(profile) if phase not in refreshing), default=float("nan")
  )
  return [
      f"{1e3 * median:.0f}",
      f"{max(times) / median:.2f}",
      f"{max(profile) / median:.2f}",
      f"{quiet / median:.2f}",
      f"{1e3 * statistics.mean(times):.0f}",
  ]


def plot_profiles(profiles: dict[tuple[int, str, str], list[float]], path: str) -> None:
  """One panel per (T, refresh): step ms against phase, one line per schedule."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = sorted({key[:2] for key in profiles})
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
  for ax, (gap, refresh) in zip(axes[0], panels):
    for (g, r, schedule), profile in profiles.items():
      if (g, r) == (gap, refresh):
        ax.plot(range(gap), [1e3 * t for t in profile], label=schedule, lw=1)
    ax.set(
        title=f"T={gap}, {refresh} refresh",
        xlabel="phase (step mod T)",
        ylabel="median step over rounds (ms)",
        yscale="log",
    )
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--gaps", type=int, nargs="+", default=[200], help="refresh periods T")
  parser.add_argument(
      "--rounds",
      type=int,
      default=5,
      help="steps timed = rounds * T; each phase's median is over the rounds",
  )
  parser.add_argument(
      "--refreshes",
      nargs="+",
      default=["svd", "randomized"],
      choices=["svd", "eigh", "randomized"],
      help="refresh kinds to time",
  )
  parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  shape = QUICK if args.quick else LLAMA_60M
  shapes = target_shapes(shape)
  params, grads = random_tree(shapes, jnp.float32, 0), random_tree(shapes, jnp.float32, 1)
  rows, record, profiles = [], {}, {}
  num_matrices = len(jax.tree.leaves(params))
  for gap in args.gaps:
    for refresh in args.refreshes:
      for stagger in (False, True):
        times = step_times(stagger, refresh, gap, args.rounds, shape.rank, params, grads)
        schedule = "staggered" if stagger else "all at once"
        profiles[gap, refresh, schedule] = phase_profile(times, gap)
        record[f"T={gap} refresh={refresh} stagger={stagger}"] = times
        rows.append(
            [
                gap,
                refresh,
                schedule,
                *spike_columns(
                    times,
                    profiles[gap, refresh, schedule],
                    refresh_phases(stagger, gap, num_matrices),
                ),
            ]
        )
        print(f"measured T={gap} {refresh} stagger={stagger}", flush=True)
  header = [
      "T",
      "refresh",
      "schedule",
      "median step ms",
      "slowest step / median",
      "slowest phase / median",
      "slowest phase without refresh / median",
      "mean step ms",
  ]
  name = "stagger_bench_quick" if args.quick else "stagger_bench"
  timing.write_report(
      name,
      f"GaLore step-time spikes, {num_matrices} LLaMA target matrices, "
      f"rank {shape.rank}, {args.rounds} rounds of T steps after step 0",
      ["phase = step mod T; a phase's time is its median over the rounds"],
      header,
      rows,
      {"args": vars(args), "step_seconds": record},
  )
  plot_profiles(profiles, os.path.join(timing.RESULTS, name + ".png"))


if __name__ == "__main__":
  main()
