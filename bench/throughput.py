"""Factoid generation throughput: batch 1 vs batched, fp32 vs bf16, shared-prefix cache on/off.

Baseline (measured in the same run): batch 1, fp32, no shared prefix cache.
    .venv/bin/python bench/throughput.py [--n 64] [--data PATH]
Also reports how many greedy answers differ from the baseline's (batch and dtype invariance).
"""

from __future__ import annotations

import argparse
import time

import torch

from kickbench import engine, models
from kickbench.tasks import factoid


def run(lm, prompts, batch_size, share_prefix):
    saved = engine.MIN_SHARED_PREFIX
    engine.MIN_SHARED_PREFIX = saved if share_prefix else 10**9
    cfg = engine.GenerationConfig(factoid.GENERATION.max_new_tokens, factoid.GENERATION.stop,
                                  batch_size)
    try:
        t0 = time.perf_counter()
        out = engine.generate(lm.model, lm.tokenizer, prompts, cfg, progress=False)
        return out, time.perf_counter() - t0
    finally:
        engine.MIN_SHARED_PREFIX = saved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    items = factoid.load(args.data)[: args.n]
    prompts = [factoid.prompt(it) for it in items]
    print(f"{args.model}, {len(prompts)} factoid prompts, {torch.get_num_threads()} threads, "
          f"native bf16: {models.cpu_has_native_bf16()}")
    print(f"{'dtype':9} {'batch':>5} {'prefix':>6} {'q/s':>7} {'new tok/s':>9} {'speedup':>7} "
          f"{'answers != baseline':>19}")
    base = None
    for dtype in args.dtypes.split(","):
        lm = models.load(args.model, dtype=dtype)
        for bs, share in ((1, False), (args.batch, False), (args.batch, True)):
            out, dt = run(lm, prompts, bs, share)
            toks = sum(g.new_tokens for g in out)
            if base is None:
                base = (out, dt)
            diff = sum(a.text != b.text for a, b in zip(out, base[0]))
            print(f"{dtype:9} {bs:>5} {'on' if share else 'off':>6} {len(out) / dt:7.2f} "
                  f"{toks / dt:9.1f} {base[1] / dt:6.1f}x {diff:>8} of {len(out)}", flush=True)


if __name__ == "__main__":
    main()
