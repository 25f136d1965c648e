"""Wanda and SparseGPT on smollm2-135m: time against one calibration forward, and perplexity.

    .venv/bin/python bench/pruning.py [--nsamples 32 --seqlen 512 --ppl-windows 40]

Baseline measured in the same run: one plain forward pass over the calibration set (and the
dense perplexity). Calibration: ../shared/data/c4_sample; perplexity: the first
--ppl-windows non-overlapping 512-token windows of ../shared/data/wikitext2/wiki.test.raw.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from kickbench import compress, models
from kickbench.compress import calibration as calib
from kickbench.compress.spec import CompressionSpec
from kickbench.engine import iter_window_nll
from kickbench.tasks import perplexity

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def ppl(lm, wins) -> float:
    nll = tok = 0
    for batch in iter_window_nll(lm.model, wins, batch_size=4, progress=False):
        nll += sum(b[1] for b in batch)
        tok += sum(b[2] for b in batch)
    return math.exp(nll / tok)


def forward_seconds(lm, tokens) -> float:
    """One plain forward over the calibration windows (the baseline)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for row in tokens:
            lm.model(input_ids=row[None], use_cache=False)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default=str(SHARED / "c4_sample" / "c4_sample_1000.jsonl"))
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--ppl-data", default=str(SHARED / "wikitext2" / "wiki.test.raw"))
    ap.add_argument("--ppl-windows", type=int, default=40)
    args = ap.parse_args()

    lm = models.load(args.model)
    cspec = calib.CalibrationSpec(args.calib, args.nsamples, args.seqlen)
    t0 = time.perf_counter()
    cal = calib.prepare(lm.tokenizer, cspec)
    t_tok = time.perf_counter() - t0
    t_fwd = forward_seconds(lm, cal.tokens)
    t0 = time.perf_counter()
    cal.captured(lm.model)
    t_cap = time.perf_counter() - t0
    wins = perplexity.windows(lm.tokenizer, perplexity.load(args.ppl_data))[: args.ppl_windows]
    dense = ppl(lm, wins)
    print(f"{args.model} {lm.dtype}, {torch.get_num_threads()} threads; calibration "
          f"{args.nsamples}x{args.seqlen} tokens (hash {cal.hash}); tokenize {t_tok:.1f} s, "
          f"capture first-block inputs {t_cap:.1f} s (once per sweep)")
    print(f"baseline: one forward over the calibration set {t_fwd:.1f} s; "
          f"dense perplexity {dense:.2f} on {len(wins)}x512 WikiText-2 tokens")
    print(f"{'method':10} {'pattern':13} {'seconds':>8} {'x forward':>9} {'ppl':>8} "
          f"{'mean layer err':>14}")
    for method in ("magnitude", "wanda", "sparsegpt"):
        for spec in (CompressionSpec(method, 0.5), CompressionSpec(method, pattern="2:4")):
            with compress.applied(lm.model, spec, cal if compress.needs_calibration(spec) else None) as rep:
                p = ppl(lm, wins)
            errs = [v["error"] for v in rep["layers"].values() if "error" in v]
            err = f"{sum(errs) / len(errs):.3f}" if errs else "-"
            print(f"{method:10} {spec.pattern if spec.nm else '50% unstr.':13} "
                  f"{rep['seconds']:8.1f} {rep['seconds'] / t_fwd:8.2f}x {p:8.2f} {err:>14}",
                  flush=True)
    # this machine's speed drifts (shared cores): time the baseline again and show both
    print(f"baseline again at the end: {forward_seconds(lm, cal.tokens):.1f} s "
          f"(ratios above use the first, {t_fwd:.1f} s)")
    print("llm-compressor side by side: not run by this script yet (needs bench/.venv-peers)")


if __name__ == "__main__":
    main()
