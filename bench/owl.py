"""OWL (outlier-weighted layer-wise sparsity) on top of Wanda and SparseGPT, against uniform
sparsity at the same levels: WikiText-2 perplexity and, with --factoid N, FreebaseQA accuracy
on the first N questions (greedy, the project's factoid prompt).

    .venv/bin/python bench/owl.py [--levels 0.5,0.7 --ppl-windows 8 --factoid 500]

Same calibration and perplexity windows as bench/pruning.py (smaller by default here). The
baseline measured in the same run: one plain forward over the calibration set, and the dense
model's perplexity (and accuracy)."""

from __future__ import annotations

import statistics

from common import SHARED, arguments, forward_seconds, ppl, setup

from kickbench import compress, config
from kickbench.engine import iter_generate, render
from kickbench.runners import generation_config
from kickbench.tasks import TaskSpec, factoid


def accuracy(lm, items) -> float:
    """Strict factoid accuracy of the model as it is now."""
    prompts = [factoid.prompt(it) for it in items]
    config_ = generation_config(TaskSpec("factoid"), 64)
    right = 0
    for batch in iter_generate(lm.model, lm.tokenizer, prompts, config_, False, "factoid"):
        for j, gen in batch:
            text = render(lm.tokenizer, prompts[j])[0]
            right += factoid.score(items[j], text, gen.text)["accuracy"]
    return right / len(items)


def main():
    ap = arguments(__doc__)
    ap.add_argument("--levels", default="0.5,0.7")
    ap.add_argument("--methods", default="wanda,sparsegpt")
    ap.add_argument("--factoid", type=int, default=0, help="FreebaseQA questions (0: skip)")
    ap.set_defaults(nsamples=16, seqlen=256, ppl_windows=8)
    args = ap.parse_args()
    lm, cal, wins = setup(args)
    items = factoid.load(SHARED / "freebaseqa" / "eval.jsonl")[: args.factoid] if args.factoid else []
    t_fwd = forward_seconds(lm.model, cal.tokens)
    acc = f", factoid {accuracy(lm, items):.3f} on {len(items)}" if items else ""
    print(f"baseline: forward over the calibration set {t_fwd:.1f} s; dense perplexity "
          f"{ppl(lm.model, wins):.2f} on {len(wins)}x512 WikiText-2 tokens{acc}", flush=True)
    print(f"{'setting':22} {'seconds':>8} {'ppl':>9} {'factoid':>8} {'sparsity':>8} "
          f"{'layer range':>13}")
    for method in args.methods.split(","):
        for level in map(float, args.levels.split(",")):
            for layerwise in (None, "owl"):
                spec = config.spec(method, sparsity=level, layerwise=layerwise, calibration=cal.spec)
                with compress.applied(lm.model, spec, cal) as rep:
                    p = ppl(lm.model, wins)
                    a = f"{accuracy(lm, items):8.3f}" if items else f"{'-':>8}"
                targets = [v.get("target_sparsity", level) for v in rep["layers"].values()]
                span = f"{min(targets):.3f}-{max(targets):.3f}"
                print(f"{spec.label:22} {rep['seconds']:8.1f} {p:9.2f} {a} {rep['sparsity']:8.3f} "
                      f"{span:>13}  (mean target {statistics.mean(targets):.3f})", flush=True)


if __name__ == "__main__":
    main()
