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
steps. Written to ``experiments/results/bench/train_step_bench.*``.

Usage::

  PYTHONPATH=. python experiments/bench/train_step_bench.py [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.bench import timing
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
        "galore": lambda: optim.galore(LEARNING_RATE, rank=rank, update_proj_gap=gap, scale=SCALE,
                                       mask=target_mask),
    }


def torch_optimizers(gap: int, rank: int) -> dict:
    import torch

    def galore(model):
        import galore_torch
        target = [p for n, p in model.named_parameters() if any(t in n for t in TARGET_LINEARS)]
        others = [p for n, p in model.named_parameters()
                  if not any(t in n for t in TARGET_LINEARS)]
        return galore_torch.GaLoreAdamW(
            [{"params": others}, {"params": target, "rank": rank, "update_proj_gap": gap,
                                  "scale": SCALE, "proj_type": "std"}],
            lr=LEARNING_RATE, no_deprecation_warning=True)

    return {"full rank": lambda model: torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE),
            "galore": galore}


def time_steps(first_step, step, repeats: int, refresh_repeats: int):
    """(median refresh-step seconds over fresh starts, median steady-step seconds)."""
    refresh = statistics.median(first_step() for _ in range(refresh_repeats))
    return refresh, timing.median_seconds(step, repeats, warmup=2, sync=lambda x: x)


def measure_jax(config: LlamaConfig, make_tx, batch, repeats: int, refresh_repeats: int):
    tx = make_tx()
    graphdef, params, frozen = nnx.split(Llama(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    fresh = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, frozen, tx.init(p)))
    step = jax.jit(make_train_step(graphdef, tx, optax.constant_schedule(LEARNING_RATE)),
                   donate_argnums=0)
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
    return time_steps(first_step, lambda: run(state), repeats, refresh_repeats)


def measure_torch(config: LlamaConfig, make_optimizer, batch, repeats: int, refresh_repeats: int):
    import torch
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(**hf_config_dict(config))
    model = transformers.LlamaForCausalLM(hf_config).float()
    ids = torch.from_numpy(np.asarray(batch["input_ids"]).astype(np.int64))
    optimizer = None

    def run():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def first_step():
        nonlocal optimizer
        optimizer = make_optimizer(model)
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    first_step()
    return time_steps(first_step, run, repeats, refresh_repeats)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="sequences per step")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=5, help="timed steady steps (>= 1)")
    parser.add_argument("--refresh-repeats", type=int, default=3, help="timed first steps (>= 1)")
    parser.add_argument("--gap", type=int, default=200, help="GaLore's refresh period T")
    parser.add_argument("--rank", type=int, default=128, help="GaLore's rank")
    parser.add_argument("--model", default="60m", help="LlamaConfig preset")
    return parser.parse_args()


def main() -> None:
    import torch

    args = parse_args()
    torch.set_num_threads(2)
    config = LlamaConfig.preset(args.model, max_seq_len=max(args.seq, 256))
    ids = np.random.default_rng(0).integers(2, config.vocab_size, (args.batch, args.seq))
    batch = {"input_ids": jnp.asarray(ids, jnp.int32),
             "loss_mask": jnp.ones((args.batch, args.seq), jnp.int32)}
    tokens = args.batch * args.seq
    rows, record = [], {}
    for method in ("full rank", "galore"):
        pair = {}
        for side, measure, factory in (
                ("lowrank_jax", measure_jax, jax_optimizers(args.gap, args.rank)[method]),
                ("HF + torch", measure_torch, torch_optimizers(args.gap, args.rank)[method])):
            refresh, steady = measure(config, factory, batch, args.repeats, args.refresh_repeats)
            amortised = (refresh + (args.gap - 1) * steady) / args.gap
            pair[side] = dict(refresh_s=refresh, steady_s=steady, amortised_s=amortised)
            print(f"measured {side} {method}", flush=True)
        ours, theirs = pair["lowrank_jax"], pair["HF + torch"]
        for side, r in pair.items():
            rows.append([method, side, f"{r['steady_s']:.2f}", f"{r['refresh_s']:.2f}",
                         f"{tokens / r['steady_s']:.0f}", f"{tokens / r['amortised_s']:.0f}",
                         f"{theirs['amortised_s'] / ours['amortised_s']:.2f}"
                         if side == "lowrank_jax" else "-"])
        record[method] = pair
    header = ["optimizer", "stack", "steady s", "first (refresh) s", "tokens/s steady",
              f"tokens/s amortised (T={args.gap})", "ours / HF speed"]
    timing.write_report(
        "train_step_bench", f"Train step, LLaMA {args.model}, fp32, {args.batch} x {args.seq} "
        "tokens, CPU",
        [f"torch threads {torch.get_num_threads()}; medians of {args.repeats} steady and "
         f"{args.refresh_repeats} first steps"],
        header, rows, {"args": vars(args), "results": record})


if __name__ == "__main__":
    main()
