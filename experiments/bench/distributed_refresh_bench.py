"""The projector refresh spread over 8 devices against the naive (XLA-placed) refresh.

Runs on 8 fake CPU devices (``--xla_force_host_platform_device_count=8``). For each
stacked leaf (LLaMA-60M's 8 layers of ``(512, 512)`` and ``(512, 1376)`` kernels, and a
larger 130M attention stack ``12 x (768, 768)``, which 8 devices do not divide: padded
to 16) the gradient, in the projection's matrix layout ``(B, p, k)``, is sharded as the
trainer shards it
(``--layouts``: ``fsdp8`` = ``(None, fsdp, None)`` on a ``1 x 8 x 1`` mesh, ``2x2x2`` =
``(None, fsdp, tensor)``, ``data8`` = replicated), and two jitted refreshes return the
projectors ``(B, p, r)`` in the sharding the optimizer state gives them
(:func:`lowrank_jax.optim.sharding.leaf_spec`):

* naive: ``vmap`` of the refresh, placed by XLA: every device decomposes every matrix
  (gathering them first when they are sharded);
* spread: :func:`lowrank_jax.optim._projection.distributed_refresh.spread_over_devices` over all
  three mesh axes: each device decomposes ``ceil(B / 8)`` whole matrices.

The report (``experiments/results/bench/distributed_refresh_bench[_quick][_<layouts>].*``)
gives interleaved medians of the wall time (``--repeats``), the per-device
peak memory of the compiled program (arguments + outputs + temporaries, from
``memory_analysis``) and the decompositions each device runs (``B`` against
``ceil(B / 8)``; XLA's ``cost_analysis`` counts a loop body once, so its FLOPs cannot
show this), with ratios naive / spread. The 8 fake devices share this machine's cores,
so the wall time measures the total work (8 copies of every decomposition for the naive
refresh), not a parallel speed-up.

Usage::

  PYTHONPATH=. python experiments/bench/distributed_refresh_bench.py [--repeats 5]
      [--refresh randomized|svd|eigh] [--rank 128] [--layouts fsdp8 2x2x2 data8] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402 (the device count must be set before JAX is imported)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from experiments.bench import timing  # noqa: E402
from lowrank_jax.optim._projection import distributed_refresh, projector_bases  # noqa: E402
from lowrank_jax.optim.sharding import leaf_spec  # noqa: E402

AXES = ("data", "fsdp", "tensor")
LAYOUTS = {
    "fsdp8": ((1, 8, 1), P(None, "fsdp", None)),
    "2x2x2": ((2, 2, 2), P(None, "fsdp", "tensor")),
    "data8": ((8, 1, 1), P()),
}
SHAPES = {
    "60m attn 8x(512,512)": (8, 512, 512),
    "60m mlp 8x(512,1376)": (8, 512, 1376),
    "130m attn 12x(768,768)": (12, 768, 768),
}
MIB = 2**20


def refreshes(refresh: str, rank: int, mesh):
  """The naive and the spread batch refresh ``(g, keys) -> projectors``."""
  refresher = projector_bases.make_refresher(refresh, rank)
  batch = lambda g, keys: jax.vmap(lambda m, k: refresher(m, k, jnp.int32(0)))(g, keys)
  spread = lambda g, keys: distributed_refresh.spread_over_devices(
      lambda *a: (batch(*a),), (g, keys), mesh=mesh, axes=AXES
  )[0]
  return {"naive": batch, "spread": spread}


def measure(shape, layout: str, refresh: str, rank: int, repeats: int) -> dict:
  mesh_shape, spec = LAYOUTS[layout]
  mesh = jax.make_mesh(mesh_shape, AXES, axis_types=(AxisType.Auto,) * 3)
  batch, rows, cols = shape
  grad_sharding = NamedSharding(mesh, spec)
  out_sharding = NamedSharding(
      mesh, leaf_spec((batch, rows, rank), (shape, tuple(spec) + (None,) * 3), mesh)
  )
  g = jax.device_put(jax.random.normal(jax.random.key(0), shape), grad_sharding)
  keys = jax.random.split(jax.random.key(1), batch)
  row = {}
  runs = {}
  for name, fn in refreshes(refresh, rank, mesh).items():
    compiled = jax.jit(fn, out_shardings=out_sharding).lower(g, keys).compile()
    memory = compiled.memory_analysis()
    row[name] = {
        "peak_mib": (
            memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        )
        / MIB
    }
    jax.block_until_ready(compiled(g, keys))  # warm-up
    runs[name] = timing.timed(lambda compiled=compiled: compiled(g, keys))
  for name, seconds in timing.interleaved_medians(runs, repeats).items():
    row[name]["seconds"] = seconds
  row["naive"]["decompositions"] = batch
  row["spread"]["decompositions"] = -(-batch // jax.device_count())
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--refresh", default="randomized", choices=["randomized", "svd", "eigh"])
  parser.add_argument("--rank", type=int, default=128)
  parser.add_argument("--layouts", nargs="+", default=["fsdp8"], choices=list(LAYOUTS))
  parser.add_argument("--quick", action="store_true", help="the two 60M shapes only")
  args = parser.parse_args()
  shapes = {k: v for k, v in SHAPES.items() if not (args.quick and "60m" not in k)}
  rows, record = [], {
      "refresh": args.refresh,
      "rank": args.rank,
      "repeats": args.repeats,
      "devices": jax.device_count(),
      "results": [],
  }
  for layout in args.layouts:
    for label, shape in shapes.items():
      result = measure(shape, layout, args.refresh, args.rank, args.repeats)
      naive, spread = result["naive"], result["spread"]
      record["results"].append({"shape": label, "layout": layout, **result})
      rows.append(
          [
              label,
              layout,
              f"{naive['seconds'] * 1e3:.0f}",
              f"{spread['seconds'] * 1e3:.0f}",
              f"{naive['seconds'] / spread['seconds']:.2f}",
              f"{naive['peak_mib']:.1f}",
              f"{spread['peak_mib']:.1f}",
              f"{naive['peak_mib'] / spread['peak_mib']:.2f}",
              naive["decompositions"],
              spread["decompositions"],
          ]
      )
      print(" | ".join(map(str, rows[-1])), flush=True)
  header = [
      "leaf",
      "layout",
      "naive ms",
      "spread ms",
      "time ratio",
      "naive MiB/dev",
      "spread MiB/dev",
      "memory ratio",
      "naive decomp./dev",
      "spread decomp./dev",
  ]
  title = (
      f"Projector refresh ({args.refresh}, rank {args.rank}) spread over "
      f"{jax.device_count()} fake CPU devices against the naive one"
  )
  notes = [
      f"Medians of {args.repeats} interleaved runs; MiB/dev: arguments + outputs + "
      "temporaries of the compiled program per device; decomp./dev: matrices each device "
      "decomposes. The fake devices share the host's cores: the time ratio is the saved "
      "total work, not a parallel speed-up."
  ]
  name = "_".join(
      [
          "distributed_refresh_bench",
          *(["quick"] if args.quick else []),
          *([] if args.layouts == ["fsdp8"] else args.layouts),
      ]
  )
  timing.write_report(name, title, notes, header, rows, record)


if __name__ == "__main__":
  main()
