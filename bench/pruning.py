"""Wanda and SparseGPT on smollm2-135m: time against one calibration forward, and perplexity.

    .venv/bin/python bench/pruning.py [--nsamples 32 --seqlen 512 --ppl-windows 40]

Baseline measured in the same run: one plain forward pass over the calibration set (and the
dense perplexity). Calibration: ../shared/data/c4_sample; perplexity: the first
--ppl-windows non-overlapping 512-token windows of ../shared/data/wikitext2/wiki.test.raw.
Then llm-compressor runs the same methods on the same windows, one process at a time, in
bench/.venv-peers (`make peers`; skipped with a message when that venv is missing).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import (PEER_HEADER, arguments, forward_seconds, peer, peer_row, peers_ready, ppl,
                    save_peer_inputs, setup)

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
    # this machine's speed drifts (shared cores): time the baseline again and show both
    print(f"baseline again at the end: {forward_seconds(lm.model, cal.tokens):.1f} s "
          f"(ratios above use the first, {t_fwd:.1f} s)")
    if args.no_peers or not peers_ready():
        return
    with tempfile.TemporaryDirectory() as tmp:
        inputs = save_peer_inputs(Path(tmp) / "inputs.pt", cal, wins)
        print("\nllm-compressor 0.14, same windows, its own process (their fwd: its own "
              "plain forward baseline)\n" + PEER_HEADER)
        for spec, (secs, p) in ours.items():
            if spec.method == "magnitude":
                continue
            flags = ["--pattern", spec.pattern] if spec.nm else ["--sparsity", str(spec.sparsity)]
            print(peer_row(spec.label, secs, p, peer(args.model, spec.method, inputs, *flags)),
                  flush=True)


if __name__ == "__main__":
    main()
