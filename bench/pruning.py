"""Wanda and SparseGPT on smollm2-135m: time against one calibration forward, and perplexity.

    .venv/bin/python bench/pruning.py [--nsamples 32 --seqlen 512 --ppl-windows 40]

Baseline measured in the same run: one plain forward pass over the calibration set (and the
dense perplexity). Calibration: ../shared/data/c4_sample; perplexity: the first
--ppl-windows non-overlapping 512-token windows of ../shared/data/wikitext2/wiki.test.raw.
Then llm-compressor runs the same methods on the same windows, one process at a time, in
bench/.venv-peers (`make peers`; skipped with a message when that venv is missing).
"""

from __future__ import annotations

from common import arguments, finish, forward_seconds, ppl, setup

from kickbench import compress
from kickbench.compress.spec import CompressionSpec


def main():
    args = arguments(__doc__).parse_args()
    lm, cal, wins = setup(args)
    t_fwd = forward_seconds(lm.model, cal.tokens)
    dense = ppl(lm.model, wins)
    print(f"baseline: one forward over the calibration set {t_fwd:.1f} s; "
          f"dense perplexity {dense:.2f} on {len(wins)}x512 WikiText-2 tokens")
    print(f"{'method':10} {'pattern':13} {'seconds':>8} {'x forward':>9} {'ppl':>8} "
          f"{'mean layer err':>14}")
    ours = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        for spec in (CompressionSpec(method, 0.5), CompressionSpec(method, pattern="2:4")):
            with compress.applied(lm.model, spec, cal if compress.needs_calibration(spec) else None) as rep:
                p = ppl(lm.model, wins)
            errs = [v["error"] for v in rep["layers"].values() if "error" in v]
            err = f"{sum(errs) / len(errs):.3f}" if errs else "-"
            ours[spec] = (rep["seconds"], p)
            print(f"{method:10} {spec.pattern if spec.nm else '50% unstr.':13} "
                  f"{rep['seconds']:8.1f} {rep['seconds'] / t_fwd:8.2f}x {p:8.2f} {err:>14}",
                  flush=True)
    finish(args, lm, cal, wins, t_fwd, [
        (spec.label, secs, p, spec.method,
         ["--pattern", spec.pattern] if spec.nm else ["--sparsity", str(spec.sparsity)])
        for spec, (secs, p) in ours.items() if spec.method != "magnitude"])


if __name__ == "__main__":
    main()
