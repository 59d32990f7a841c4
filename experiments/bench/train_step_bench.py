"""Train-step throughput of lowrank_jax against HF transformers + the PyTorch optimizers.

One step = forward, backward and optimizer update of LLaMA-60M (fp32, sequence 256,
``--batch`` sequences) on random tokens:

* lowrank_jax: :func:`lowrank_jax.train.step.make_train_step`, jitted with the state
  donated, with ``optax.adamw`` (full rank) or :func:`lowrank_jax.optim.galore` on the
  seven target linears of every block (:func:`lowrank_jax.train.methods.target_mask`);
* HF: ``transformers.LlamaForCausalLM`` of the same configuration
  (:func:`lowrank_jax.models.hf.hf_config_dict`), ``loss.backward()`` and
  ``torch.optim.AdamW`` or ``galore_torch.GaLoreAdamW`` on the same target weights.

GaLore's first step refreshes every projector (an SVD per matrix); the table gives the
steady step (median of ``--repeats`` after two warm-up steps), that refresh step (median
of ``--refresh-repeats`` fresh optimizers) and tokens/s amortised over ``T = --gap``
steps. The four contenders are timed round robin (interleaved medians), so a change of
the machine's load hits all of them alike. Written to ``experiments/results/bench/train_step_bench.*``.

On a GPU both stacks run on it. Usage::

  PYTHONPATH=. python experiments/bench/train_step_bench.py [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.bench import timing
from experiments.bench.optim_bench import Contender
from lowrank_jax import optim
from lowrank_jax.models import Llama, LlamaConfig
from lowrank_jax.models.hf import hf_config_dict
from lowrank_jax.train.methods import TARGET_LINEARS, target_mask
from lowrank_jax.train.state import TrainState
from lowrank_jax.train.step import make_train_step

LEARNING_RATE = 1e-3
SCALE = 0.25


def jax_optimizers(gap: int, rank: int) -> dict:
  return {
      "full rank": lambda: optax.adamw(LEARNING_RATE),
      "galore": lambda: optim.galore(
          LEARNING_RATE, rank=rank, update_proj_gap=gap, scale=SCALE, projection_mask=target_mask
      ),
  }


def torch_optimizers(gap: int, rank: int) -> dict:
  import torch

  def galore(model):
    import galore_torch

    target = [p for n, p in model.named_parameters() if any(t in n for t in TARGET_LINEARS)]
    others = [p for n, p in model.named_parameters() if not any(t in n for t in TARGET_LINEARS)]
    return galore_torch.GaLoreAdamW(
        [
            {"params": others},
            {
                "params": target,
                "rank": rank,
                "update_proj_gap": gap,
                "scale": SCALE,
                "proj_type": "std",
            },
        ],
        lr=LEARNING_RATE,
        no_deprecation_warning=True,
    )

  return {
      "full rank": lambda model: torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE),
      "galore": galore,
  }


def prepare_jax(config: LlamaConfig, make_tx, batch) -> Contender:
  tx = make_tx()
  graphdef, params, frozen = nnx.split(Llama(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
  fresh = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, frozen, tx.init(p)))
  step = jax.jit(make_train_step(graphdef, tx), donate_argnums=0)
  step = step.lower(fresh(params), batch).compile()
  state = None

  def run(previous):
    nonlocal state
    state, metrics = step(previous, batch)
    return jax.block_until_ready(metrics["loss"])

  def first_step():
    initial = jax.block_until_ready(fresh(params))
    start = time.perf_counter()
    run(initial)
    return time.perf_counter() - start

  first_step()  # warms the refresh's kernels up
  return Contender(first_step, warmed_up(timing.timed(lambda: run(state), sync=lambda x: x)))


def warmed_up(steady_step: Callable[[], float]) -> Callable[[], float]:
  """``steady_step`` after two untimed calls."""
  steady_step()
  steady_step()
  return steady_step


def prepare_torch(config: LlamaConfig, make_optimizer, batch) -> Contender:
  import torch
  import transformers

  torch.manual_seed(0)
  hf_config = transformers.LlamaConfig(**hf_config_dict(config))
  device = timing.torch_device()
  model = transformers.LlamaForCausalLM(hf_config).float().to(device)
  ids = torch.from_numpy(np.asarray(batch["input_ids"]).astype(np.int64)).to(device)
  optimizer = None

  def run():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()  # waits for the step (on a GPU too)

  def first_step():
    nonlocal optimizer
    optimizer = make_optimizer(model)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start

  first_step()
  return Contender(first_step, warmed_up(timing.timed(run, sync=lambda x: x)))


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=2, help="sequences per step")
  parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
  parser.add_argument("--repeats", type=int, default=5, help="timed steady steps (>= 1)")
  parser.add_argument("--refresh-repeats", type=int, default=3, help="timed first steps (>= 1)")
  parser.add_argument("--gap", type=int, default=200, help="GaLore's refresh period T")
  parser.add_argument("--rank", type=int, default=128, help="GaLore's rank")
  parser.add_argument("--model", default="60m", help="LlamaConfig preset")
  parser.add_argument("--name", default="train_step_bench", help="results file name")
  return parser.parse_args()


def main() -> None:
  import torch

  args = parse_args()
  torch.set_num_threads(2)
  config = LlamaConfig.preset(args.model, max_seq_len=max(args.seq, 256))
  ids = np.random.default_rng(0).integers(2, config.vocab_size, (args.batch, args.seq))
  batch = {
      "input_ids": jnp.asarray(ids, jnp.int32),
      "loss_mask": jnp.ones((args.batch, args.seq), jnp.int32),
  }
  tokens = args.batch * args.seq
  contenders = {}
  for method in ("full rank", "galore"):
    contenders[method, "lowrank_jax"] = prepare_jax(
        config, jax_optimizers(args.gap, args.rank)[method], batch
    )
    contenders[method, "HF + torch"] = prepare_torch(
        config, torch_optimizers(args.gap, args.rank)[method], batch
    )
    print(f"prepared {method}", flush=True)
  first = timing.interleaved_medians(
      {k: c.refresh for k, c in contenders.items()}, args.refresh_repeats
  )
  steady = timing.interleaved_medians({k: c.steady for k, c in contenders.items()}, args.repeats)
  rows, record = [], {}
  for method in ("full rank", "galore"):
    pair = {
        side: dict(
            refresh_s=first[method, side],
            steady_s=steady[method, side],
            amortised_s=(first[method, side] + (args.gap - 1) * steady[method, side]) / args.gap,
        )
        for side in ("lowrank_jax", "HF + torch")
    }
    ours, theirs = pair["lowrank_jax"], pair["HF + torch"]
    for side, r in pair.items():
      rows.append(
          [
              method,
              side,
              f"{1e3 * r['steady_s']:.1f}",
              f"{1e3 * r['refresh_s']:.0f}",
              f"{tokens / r['steady_s']:.0f}",
              f"{tokens / r['amortised_s']:.0f}",
              f"{theirs['amortised_s'] / ours['amortised_s']:.2f}"
              if side == "lowrank_jax"
              else "-",
          ]
      )
    record[method] = pair
  header = [
      "optimizer",
      "stack",
      "steady ms",
      "first (refresh) ms",
      "tokens/s steady",
      f"tokens/s amortised (T={args.gap})",
      "ours / HF speed",
  ]
  timing.write_report(
      args.name,
      f"Train step, LLaMA {args.model}, fp32, {args.batch} x {args.seq} "
      f"tokens, {jax.devices()[0].device_kind}",
      [
          f"PyTorch on {timing.torch_device()}, {torch.get_num_threads()} threads; medians of {args.repeats} steady and "
          f"{args.refresh_repeats} first steps"
      ],
      header,
      rows,
      {"args": vars(args), "results": record},
  )


if __name__ == "__main__":
  main()
