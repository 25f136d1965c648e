"""Generation throughput: kickbench next to lm-eval's HF backend and plain batch-1 generate.

    .venv/bin/python bench/generation.py [--tasks factoid,icraqa,icsum] [--dtypes float32,bfloat16]

Three workloads on the project's prompts: factoid QA (FreebaseQA, few-shot template, 16 new
tokens, stop "\\n", batch 64), retrieval QA (NQ-open oracle passages, the icraqa task's open-book
template, 24 tokens, stop "\\n", batch 64) and summaries (CNN/DailyMail stories through the chat
template, 256 new tokens, EOS only, batch 8). For each dtype, on the same in-memory model,
prompts, dtype and batch size:

- kickbench: `engine.generate`;
- lm-eval 0.4.13: `HFLM.generate_until` (timed alone; the HFLM is built beforehand);
- plain `model.generate`, one prompt at a time (greedy, stopped by the engine's answer rule:
  a stop string after the leading whitespace).

lm-eval's text goes through the same rule (it keeps the leading space); where it stopped at a
leading newline its answer is "" and counted apart.

Prints questions/s, speed-up over lm-eval, the answers that differ from lm-eval's and from
batch-1 generate's, and the fraction of this run's matmul floor: the GEMM rate measured here at
a transformer-layer shape, against the matmul FLOPs of the tokens that matter (the shared
preamble once; each prompt's remaining tokens and its answer's, the LM head only where a next
token is picked, and the attention pairs).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from common import SHARED
from mmlu_parity import matmul_gflops, model_flops

from kickbench import engine, models
from kickbench.tasks import factoid, icraqa, summarize

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@dataclass(frozen=True)
class Workload:
    name: str
    module: object
    data: str
    n: int
    batch: int
    max_new_tokens: int
    stop: tuple[str, ...]


WORKLOADS = {
    "factoid": Workload("factoid", factoid, str(SHARED / "freebaseqa" / "eval.jsonl"), 128, 64,
                        factoid.GENERATION.max_new_tokens, factoid.GENERATION.stop),
    "icraqa": Workload("retrieval QA", icraqa, str(SHARED / "nq_open_oracle" / "test.jsonl"), 64,
                       64, icraqa.GENERATION.max_new_tokens, icraqa.GENERATION.stop),
    "icsum": Workload("summaries", summarize,
                      str(SHARED / "cnn_dailymail_llmkick" / "stories.jsonl"), 8, 8, 256, ()),
}


def ours(lm, prompts, cfg):
    t0 = time.perf_counter()
    out = engine.generate(lm.model, lm.tokenizer, prompts, cfg, progress=False)
    return [g.text for g in out], [g.new_tokens for g in out], time.perf_counter() - t0


def breakdown(lm, prompts, cfg) -> str:
    """Where our time goes: prefill forwards (several tokens a row) and decoding steps (one),
    timed by hooks in a second, untimed run."""
    calls, start = [], {}

    def pre(m, a, kw):
        start["t"] = time.perf_counter()

    def post(m, a, kw, out):
        ids = kw["input_ids"]
        calls.append((ids.shape[0], ids.shape[1], kw["attention_mask"].shape[1] if kw.get(
            "attention_mask") is not None else ids.shape[1], time.perf_counter() - start["t"]))

    hooks = [lm.model.register_forward_pre_hook(pre, with_kwargs=True),
             lm.model.register_forward_hook(post, with_kwargs=True)]
    try:
        t0 = time.perf_counter()
        engine.generate(lm.model, lm.tokenizer, prompts, cfg, progress=False)
        total = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    pre_calls = [c for c in calls if c[1] > 1]
    dec = [c for c in calls if c not in pre_calls]
    pre_s, dec_s = sum(c[3] for c in pre_calls), sum(c[3] for c in dec)
    rows = sum(c[0] for c in dec) / max(len(dec), 1)
    width = sum(c[2] for c in dec) / max(len(dec), 1)
    return (f"prefill {pre_s:.2f} s in {len(pre_calls)} forwards ({sum(c[0] * c[1] for c in pre_calls)} "
            f"tokens with padding); decoding {dec_s:.2f} s in {len(dec)} steps ({dec_s / max(len(dec), 1) * 1e3:.1f} "
            f"ms a step, {rows:.1f} rows, {width:.0f} slots wide on average); outside forwards "
            f"{total - pre_s - dec_s:.2f} s of {total:.2f} s")


def step_ms(lm, rows: int, width: int) -> float:
    """One decoding step of `rows` rows over `width` cached slots (median of 5), for scale."""
    ids = torch.ones((rows, width), dtype=torch.long, device=lm.device)
    with torch.inference_mode():
        cache = lm.model(input_ids=ids, use_cache=True, logits_to_keep=1).cache
        times = []
        for k in range(5):
            t0 = time.perf_counter()
            lm.model(input_ids=ids[:, :1], cache=cache, use_cache=True,
                     position_ids=torch.full((rows, 1), width + k, device=lm.device))
            times.append(time.perf_counter() - t0)
    return sorted(times)[2] * 1e3


def theirs(lm, texts, cfg):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hflm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=cfg.batch_size)
    kwargs = {"until": list(cfg.stop), "max_gen_toks": cfg.max_new_tokens, "do_sample": False}
    reqs = [Instance("generate_until", {}, (t, dict(kwargs)), i) for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    out = hflm.generate_until(reqs, disable_tqdm=True)
    secs = time.perf_counter() - t0
    # its text through our answer rule (it keeps a leading space; a leading stop string is
    # already a cut there, the answers that differ for that reason are counted apart)
    return [engine.cut_at_stop(t, cfg.stop) for t in out], secs


class AnswerStop(StoppingCriteria):
    """generate's stop for the engine's answer rule: a stop string after the generated text's
    leading whitespace (generate's own stop_strings would end a row on a leading newline)."""

    def __init__(self, tokenizer, stop, start: int):
        self.tok, self.stop, self.start = tokenizer, stop, start

    def __call__(self, input_ids, scores, **kw):
        text = self.tok.decode(input_ids[0, self.start:], skip_special_tokens=True).lstrip()
        return torch.tensor([any(s in text for s in self.stop)], device=input_ids.device)


def batch_one(lm, texts, specials, cfg):
    """Plain model.generate, one prompt at a time (no padding, no batching)."""
    pad = lm.tokenizer.pad_token_id
    out, t0 = [], time.perf_counter()
    for text, special in zip(texts, specials):
        ids = torch.tensor([lm.tokenizer(text, add_special_tokens=special)["input_ids"]],
                           device=lm.device)
        kw = {"stopping_criteria": StoppingCriteriaList(
            [AnswerStop(lm.tokenizer, cfg.stop, ids.shape[1])])} if cfg.stop else {}
        with torch.inference_mode():
            seq = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    do_sample=False, max_new_tokens=cfg.max_new_tokens,
                                    pad_token_id=pad, **kw)
        toks = [t for t in seq[0, ids.shape[1]:].tolist() if t != pad]
        out.append(engine.cut_at_stop(lm.tokenizer.decode(toks, skip_special_tokens=True), cfg.stop))
    return out, time.perf_counter() - t0


def floor_flops(lm, encoded, new_tokens) -> float:
    """Matmul FLOPs of the tokens that matter: the shared preamble once, then per prompt its
    remaining tokens and its answer's (the last answer token is never fed), the LM head once
    per answer token, and every fed token's attention over what precedes it."""
    n = engine.shared_prefix_len(encoded) if engine.prefix_sharing_safe(lm.model) else 0
    tokens, rows, pairs = n, 1 if n else 0, n * (n + 1) // 2
    for ids, new in zip(encoded, new_tokens):
        fed = len(ids) - n + max(new - 1, 0)
        tokens += fed
        rows += new
        pairs += sum(range(n + 1, n + fed + 1))
    return model_flops(lm.model, tokens, rows, pairs)


def best(repeats: int, run):
    """The fastest of `repeats` runs (its results; the time is the last element)."""
    return min((run() for _ in range(max(1, repeats))), key=lambda r: r[-1])


def differ(a, b) -> int:
    return sum(x != y for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default="factoid,icraqa,icsum")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--n", type=int, default=None, help="prompts per task (default: the task's)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the task's)")
    ap.add_argument("--batch1-n", type=int, default=None,
                    help="prompts for the batch-1 generate baseline (default: all)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs of kickbench and lm-eval each; the fastest counts (the first pays "
                         "for kernel set-up: oneDNN builds bf16 kernels per shape)")
    ap.add_argument("--no-lm-eval", action="store_true")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time our prefill and decoding forwards (a second, hooked run)")
    args = ap.parse_args()
    print(f"{args.model}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"native bf16: {models.cpu_has_native_bf16()}", flush=True)
    print(f"{'task':13} {'dtype':5} {'tool':17} {'q/s':>7} {'new tok/s':>9} {'vs lm-eval':>10} "
          f"{'differ lm-eval':>14} {'differ batch-1':>14} {'of floor':>8}", flush=True)
    for dtype in args.dtypes.split(","):
        lm = models.load(args.model, dtype=dtype)
        gemm = matmul_gflops(lm.dtype) * 1e9
        label = "fp32" if lm.dtype == torch.float32 else "bf16"
        print(f"-- {label}: GEMM rate {gemm / 1e9:.0f} GFLOP/s at 2048x576 @ 576x1536", flush=True)
        for key in args.tasks.split(","):
            w = WORKLOADS[key]
            items = w.module.load(w.data)[: args.n or w.n]
            prompts = [w.module.prompt(it) for it in items]
            cfg = engine.GenerationConfig(w.max_new_tokens, w.stop, args.batch or w.batch)
            rendered = [engine.render(lm.tokenizer, p) for p in prompts]
            texts, specials = [r[0] for r in rendered], [r[1] for r in rendered]
            encoded = engine.encode(lm.tokenizer, prompts)
            mine, new, secs = best(args.repeats, lambda: ours(lm, prompts, cfg))
            floor = floor_flops(lm, encoded, new) / gemm
            rows = [("kickbench", mine, secs)]
            lme = None
            if not args.no_lm_eval:
                lme, their_secs = best(args.repeats, lambda: theirs(lm, texts, cfg))
                rows.append(("lm-eval HF", lme, their_secs))
            k = args.batch1_n or len(prompts)
            batch_one(lm, texts[:1], specials[:1], cfg)  # warm-up
            b1, b1_secs = batch_one(lm, texts[:k], specials[:k], cfg)
            rows.append((f"generate, batch 1" + (f" ({k})" if k < len(prompts) else ""), b1, b1_secs))
            toks = sum(new)
            for tool, out, s in rows:
                m = len(out)
                scale = m / len(prompts)  # the batch-1 baseline may run on a subset
                print(f"{w.name:13} {label:5} {tool:17} {m / s:7.2f} {toks * scale / s:9.1f} "
                      f"{(len(out) / s) / (len(lme) / their_secs) if lme else float('nan'):9.2f}x "
                      f"{differ(out, lme) if lme else '-':>14} {differ(out[:k], b1):>14} "
                      f"{floor * scale / s:8.0%}", flush=True)
            empty = sum(t == "" != m for t, m in zip(lme, mine)) if lme else 0
            print(f"   {len(prompts)} prompts, batch {cfg.batch_size}, {toks} new tokens; floor "
                  f"{floor:.2f} s; ours {secs:.2f} s; lm-eval answers cut to \"\" at a leading "
                  f"stop: {empty}", flush=True)
            if args.breakdown:
                width = max(len(e) for e in encoded) + w.max_new_tokens
                print(f"   ours: {breakdown(lm, prompts, cfg)}; one step takes {step_ms(lm, 1, width):.1f} ms "
                      f"at 1 row, {step_ms(lm, cfg.batch_size, width):.1f} ms at {cfg.batch_size} rows "
                      f"({width} slots)", flush=True)


if __name__ == "__main__":
    main()
