"""MMLU letter and cloze scoring: kickbench next to lm-eval on the same items and prompts.

    .venv/bin/python bench/mmlu_parity.py [--n 1000 --shots 0,5 --batch-size 16 --dtypes float32,bfloat16]

Needs lm-eval in the main venv (`make peers`). Both score the same in-memory model at the
same dtype and batch size on the same prompts: kickbench's own (Hendrycks letter format and
the question/answer cloze format, shots dropped to fit), handed to lm-eval through a task
YAML over a JSONL this script writes. Prints accuracy of both (and how many items' predictions
differ), items per second (lm-eval: its loglikelihood calls only, not task setup; ours with
prompt building), and the fraction of this run's matmul floor: the GEMM rate measured here
(per dtype, at a transformer-layer shape) against the matmul FLOPs of the tokens that matter
(each shared preamble once, every request's remaining context tokens, continuation tokens
but the last, the LM head only where a log-probability is read, the attention pairs); for
cloze also the two ways to score multi-token options, KV-cache reuse (default) vs context +
option rows.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from common import SHARED

from kickbench import engine, models
from kickbench.engine import encode_choice, loglikelihood
from kickbench.tasks import mmlu

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{{field}}}}}"
doc_to_choice: {choices}
doc_to_target: answer
num_fewshot: 0
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def matmul_gflops(dtype: torch.dtype, seconds: float = 3.0) -> float:
    """This machine's sustained GEMM rate at a transformer-layer shape (the floor's baseline)."""
    a, b = torch.randn(2048, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 2048 * 576 * 1536 * n / (time.perf_counter() - t0) / 1e9


def model_flops(model, tokens: int, logit_rows: int, attn_token_pairs: int) -> float:
    """Matmul FLOPs of a forward: 2 per weight per token in the blocks, the LM head on the
    rows whose logits are computed, and QK^T + AV over the attended pairs."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    blocks = sum(p.numel() for n, p in model.named_parameters()
                 if p.dim() == 2 and p is not emb and "lm_head" not in n)
    return 2 * blocks * tokens + 2 * emb.numel() * logit_rows \
        + 4 * cfg.num_hidden_layers * cfg.hidden_size * attn_token_pairs


def ours(lm, reqs, batch_size, reuse_prefix=True):
    t0 = time.perf_counter()
    res = loglikelihood(lm.model, lm.tokenizer, reqs, batch_size, reuse_prefix, progress=False)
    return res, time.perf_counter() - t0


def theirs(lm, rows, field, choices, batch_size, tmp: Path):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data = tmp / f"{field}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    name = f"kb_{field}"
    (tmp / f"{name}.yaml").write_text(YAML.format(name=name, path=data, field=field, choices=choices))
    hflm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size)
    scoring, inner = [0.0], hflm.loglikelihood

    def timed(requests, *a, **kw):  # its scoring alone, without task setup
        t = time.perf_counter()
        out = inner(requests, *a, **kw)
        scoring[0] += time.perf_counter() - t
        return out

    hflm.loglikelihood = timed
    t0 = time.perf_counter()
    out = simple_evaluate(model=hflm, tasks=[name], task_manager=TaskManager(include_path=str(tmp)),
                          log_samples=True, verbosity="WARNING")
    total = time.perf_counter() - t0
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return out["results"][name], samples, scoring[0], total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(SHARED / "mmlu" / "test.jsonl"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--shots", default="0,5")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--concat", action="store_true",
                    help="also time cloze scoring as context + option rows (no KV-cache reuse)")
    args = ap.parse_args()
    items = mmlu.load(args.data)[: args.n]
    print(f"{args.model}, {torch.get_num_threads()} threads, batch {args.batch_size}; {len(items)} "
          f"MMLU test items over {len({i['subject'] for i in items})} subjects")
    print(f"{'setting':16} {'dtype':5} {'ours acc':>8} {'lm-eval':>8} {'diff pts':>8} "
          f"{'pred. differ':>12} {'ours it/s':>9} {'lm-eval it/s':>12} {'speed-up':>8} "
          f"{'ours tok/s':>10} {'of floor':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            lm = models.load(args.model, dtype=dtype)
            gemm = matmul_gflops(lm.dtype)
            label = "fp32" if lm.dtype == torch.float32 else "bf16"
            print(f"-- {label}: GEMM rate {gemm:.0f} GFLOP/s at 2048x576 @ 576x1536", flush=True)
            for template in (f"{s}-shot" for s in args.shots.split(",")):
                if template not in mmlu.TEMPLATES:
                    raise SystemExit(f"--shots takes 0 and/or 5, got {template}")
                setting(lm, items, template, label, gemm, args, Path(tmp))


def setting(lm, items, template, label, gemm, args, tmp: Path):
    t0 = time.perf_counter()
    reqs = [mmlu.requests(it, template, lm.tokenizer) for it in items]
    build = time.perf_counter() - t0
    rows = [{"letter": r["letter"].context, "cloze": r["cloze"].context,
             "choices": it["choices"], "answer": it["answer"]} for r, it in zip(reqs, items)]
    for kind, choices in (("letter", '["A", "B", "C", "D"]'), ("cloze", '"{{choices}}"')):
        mine, secs = ours(lm, [r[kind] for r in reqs], args.batch_size)
        if kind == "cloze" and args.concat:  # the alternative: context + option rows
            concat, concat_secs = ours(lm, [r[kind] for r in reqs], args.batch_size, False)
            gap = max(abs(a - b) for m, c in zip(mine, concat)
                      for a, b in zip(m.logprobs, c.logprobs))
            print(f"  cloze options after a cached context: {secs:.1f} s; as context + "
                  f"option rows: {concat_secs:.1f} s ({concat_secs / secs:.2f}x); "
                  f"max log-prob difference {gap:.1e}", flush=True)
        secs += build / 2
        res, samples, their_secs, their_total = theirs(lm, rows, kind, choices, args.batch_size, tmp)
        tok = _tokens(lm, [r[kind] for r in reqs])
        floor = model_flops(lm.model, *tok) / (gemm * 1e9)
        print(f"  {template} {kind} {label}: lm-eval scoring {their_secs:.1f} s of {their_total:.1f} s "
              f"in simple_evaluate; ours {secs:.1f} s (+{build / 2:.1f} s building prompts); "
              f"floor {floor:.1f} s", flush=True)
        for metric, norm in (("acc", False), ("acc_norm", True)):
            if kind == "letter" and norm:
                continue
            preds = [_pred(m.logprobs, it["choices"] if norm else None) for m, it in zip(mine, items)]
            acc = sum(p == it["answer"] for p, it in zip(preds, items)) / len(items)
            their_preds = [_pred([float(x[0]) for x in s["filtered_resps"]],
                                 it["choices"] if norm else None) for s, it in zip(samples, items)]
            differ = sum(a != b for a, b in zip(preds, their_preds))
            name = f"{template} {kind}{' norm' if norm else ''}"
            print(f"{name:16} {label:5} {acc:8.3f} {res[metric + ',none']:8.3f} "
                  f"{100 * (acc - res[metric + ',none']):+8.2f} {differ:12d} "
                  f"{len(items) / secs:9.2f} {len(items) / their_secs:12.2f} "
                  f"{their_secs / secs:7.2f}x {tok[0] / secs:10.0f} {floor / secs:8.0%}", flush=True)


def _pred(logprobs, choices=None) -> int:
    vals = [lp / len(c) for lp, c in zip(logprobs, choices)] if choices else list(logprobs)
    return max(range(len(vals)), key=lambda i: vals[i])


def _tokens(lm, reqs) -> tuple[int, int, int]:
    """(tokens that must go through the model, rows of logits, attended pairs): each run's
    shared preamble once (as engine._runs groups them), then each context's remaining tokens
    with its last logits, and multi-token continuations after it with the logits they need."""
    encoded = [encode_choice(lm.tokenizer, r) for r in reqs]
    ctxs = [e[0] for e in encoded]
    order = sorted(range(len(ctxs)), key=lambda i: (ctxs[i][:engine.PREFIX_KEY], -len(ctxs[i])))
    tokens = rows = pairs = 0
    for run in engine._runs(order, ctxs):
        n = engine.shared_prefix_len([ctxs[i] for i in run]) if engine.prefix_sharing_safe(lm.model) else 0
        tokens, pairs = tokens + n, pairs + n * (n + 1) // 2
        for i in run:
            ctx, conts = encoded[i]
            tokens += len(ctx) - n
            rows += 1
            pairs += sum(range(n + 1, len(ctx) + 1))
            for c in conts:
                if len(c) > 1:
                    tokens += len(c) - 1
                    rows += len(c) - 1
                    pairs += sum(len(ctx) + k for k in range(1, len(c)))
    return tokens, rows, pairs


if __name__ == "__main__":
    main()
