"""llm-compressor on the same model, calibration windows and perplexity windows as kickbench.

Runs in bench/.venv-peers (llm-compressor pins an older transformers); bench/pruning.py and
bench/quantization.py call it with files they wrote, and read one JSON line back:

    bench/.venv-peers/bin/python bench/peer_llmcompressor.py --model-dir DIR \
        --inputs inputs.pt --method wanda --sparsity 0.5

inputs.pt holds {"calibration": LongTensor[n, seqlen], "windows": [[token ids], ...]}.
Prints {"method", "seconds" (the oneshot call), "forward_seconds" (one plain forward over
the calibration windows, this process's own baseline), "ppl", "dense_ppl"}.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM


def ppl(model, windows) -> float:
    nll = tok = 0.0
    with torch.no_grad():
        for w in windows:
            ids = torch.tensor([w])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            tok += len(w) - 1
    return math.exp(nll / tok)


def modifier(args):
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.quantization import GPTQModifier
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    ignore = ["re:.*lm_head"]  # tied embeddings: plain "lm_head" would prune the embedding too
    if args.method in ("wanda", "sparsegpt"):
        cls = WandaPruningModifier if args.method == "wanda" else SparseGPTModifier
        structure = args.pattern if args.pattern else "0:0"
        sparsity = 0.5 if args.pattern else args.sparsity
        return cls(sparsity=sparsity, mask_structure=structure, targets=["Linear"], ignore=ignore)
    weights = QuantizationArgs(num_bits=args.bits, type="int", symmetric=args.symmetric,
                               strategy="group" if args.group_size else "channel",
                               group_size=args.group_size or None)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    if args.method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        # duo_scaling=False: scales from activations alone, as llm-awq's auto_scale (and ours)
        return AWQModifier(config_groups={"group_0": scheme}, ignore=ignore, duo_scaling=False)
    if args.method == "gptq":
        # llm-compressor 0.14 defaults to static act-order; match our spec instead
        return GPTQModifier(config_groups={"group_0": scheme}, ignore=ignore,
                            dampening_frac=0.01, block_size=128,
                            actorder="static" if args.act_order else None)
    raise SystemExit(f"unknown method {args.method!r}; allowed: wanda, sparsegpt, gptq, awq")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--pattern", default="", help="N:M, e.g. 2:4")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=0, help="0 = per output channel")
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--act-order", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if not torch.cuda.is_available():
        # llm-compressor 0.14's AWQ pins its activation cache (a host-to-GPU transfer
        # optimisation); on a CPU-only torch pin_memory raises, and skipping it changes no value
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self

    from llmcompressor import oneshot

    data = torch.load(args.inputs)
    tokens, windows = data["calibration"], data["windows"]
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    dense = ppl(model, windows)
    t0 = time.perf_counter()
    with torch.no_grad():
        for row in tokens:
            model(input_ids=row[None], use_cache=False)
    forward = time.perf_counter() - t0
    calib = Dataset.from_dict({"input_ids": tokens.tolist(),
                               "attention_mask": torch.ones_like(tokens).tolist()})
    t0 = time.perf_counter()
    oneshot(model=model, dataset=calib, recipe=modifier(args), num_calibration_samples=len(tokens),
            max_seq_length=tokens.shape[1], shuffle_calibration_samples=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"method": args.method, "seconds": seconds, "forward_seconds": forward,
                      "ppl": ppl(model, windows), "dense_ppl": dense}), flush=True)


if __name__ == "__main__":
    main()
