"""Cost and quality of the projector refreshes on LLaMA-1B shapes.

For each shape (the 1B model's ``(2048, 2048)`` attention and ``(2048, 5461)`` MLP
kernels, rank 512) a realistic gradient is built: a full-rank matrix with a decaying
spectrum, ``G = X diag(s) Y^T`` with Gaussian ``X, Y`` and ``s_i = (1 + i / 16)^-1``,
plus a little isotropic noise. Each refresh of :mod:`lowrank_jax.optim._projection.projection`
(``svd``, the randomized range finder with its default oversampling and one power
iteration, the Gram-matrix eigh) is jitted and timed (interleaved medians); its quality
is the captured gradient energy ``||P^T G||_F^2 / ||U_r^T G||_F^2``, with ``U_r`` the
exact top-``r`` singular vectors (1 is the best any rank-``r`` projector does). Written
to ``experiments/results/bench/refresh_bench.*``.

Usage::

  PYTHONPATH=. python experiments/bench/refresh_bench.py [--repeats 5] [--rank 512]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from experiments.bench import timing
from lowrank_jax.optim import linalg
from lowrank_jax.optim._projection import projector_bases

SHAPES_1B = [(2048, 2048), (2048, 5461)]


def realistic_gradient(shape: tuple[int, int], seed: int = 0, noise: float = 0.05) -> jax.Array:
  """``X diag(s) Y^T + noise`` with ``s_i = (1 + i / 16)^-1``: a decaying full spectrum."""
  rows, cols = shape
  inner = min(shape)
  kx, ky, kn = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (rows, inner)) / inner**0.5
  y = jax.random.normal(ky, (cols, inner)) / inner**0.5
  spectrum = 1.0 / (1.0 + jnp.arange(inner) / 16.0)
  return (x * spectrum) @ y.T + noise * jax.random.normal(kn, shape) / inner**0.5


def exact_svd_basis(matrix: jax.Array, key: jax.Array, rank: int) -> jax.Array:
  """The top-``rank`` left singular vectors from the backend's SVD (LAPACK, cuSOLVER), the
  reference every refresh is held to (the library's ``"svd"`` refresh takes them from the
  Gram matrix on CPUs and NVIDIA GPUs)."""
  del key
  return projector_bases.canonical_signs(linalg.svd(matrix)[0][:, :rank])


def refreshers(rank: int) -> dict:
  """Jitted ``(matrix, key) -> projector``: the exact SVD and every data-dependent refresh."""
  kinds = {
      kind: functools.partial(projector_bases.make_refresher(kind, rank), count=None)
      for kind in ("svd", "randomized", "eigh")
  }
  return {
      name: jax.jit(f)
      for name, f in {"exact SVD": functools.partial(exact_svd_basis, rank=rank), **kinds}.items()
  }


def captured_energy(basis: jax.Array, exact: jax.Array, grad: jax.Array) -> float:
  """``||P^T G||^2 / ||U_r^T G||^2``."""
  energy = lambda p: jnp.sum(jnp.square(p.T @ grad))
  return float(energy(basis) / energy(exact))


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per refresh")
  parser.add_argument("--rank", type=int, default=512)
  parser.add_argument("--quick", action="store_true", help="(256, 683) shapes, rank 64")
  parser.add_argument("--name", default=None, help="results file name (default refresh_bench)")
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  shapes = [(256, 256), (256, 683)] if args.quick else SHAPES_1B
  rank = 64 if args.quick else args.rank
  rows, record = [], {}
  key = jax.random.key(1)
  header = ["matrix", "refresh", "seconds", "speed-up vs exact SVD", "captured energy vs exact SVD"]
  for shape in shapes:
    grad = realistic_gradient(shape)
    funcs = refreshers(rank)
    bases = {kind: jax.block_until_ready(f(grad, key)) for kind, f in funcs.items()}
    seconds = timing.interleaved_medians(
        {kind: timing.timed(lambda f=f: f(grad, key)) for kind, f in funcs.items()}, args.repeats
    )
    for kind in funcs:
      quality = captured_energy(bases[kind], bases["exact SVD"], grad)
      rows.append(
          [
              f"{shape[0]} x {shape[1]}",
              kind,
              f"{seconds[kind]:.3f}",
              f"{seconds['exact SVD'] / seconds[kind]:.1f}",
              f"{quality:.4f}",
          ]
      )
      record[f"{shape} {kind}"] = dict(seconds=seconds[kind], captured_energy=quality)
    timing.write_report(  # after every shape: a partial run still leaves its rows
        args.name or ("refresh_bench_quick" if args.quick else "refresh_bench"),
        f"Projector refresh, rank {rank}, fp32, one matrix ({jax.devices()[0].device_kind})",
        [
            f"interleaved medians of {args.repeats} runs; gradient = decaying spectrum "
            "(s_i = 1 / (1 + i/16)) + noise"
        ],
        header,
        rows,
        {"args": vars(args), "results": record},
    )


if __name__ == "__main__":
  main()
