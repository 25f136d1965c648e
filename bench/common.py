"""What the benchmarks share: data paths, the forward baseline, perplexity, the peers venv."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from kickbench import models
from kickbench.compress import calibration as calib
from kickbench.engine import iter_window_nll
from kickbench.tasks import perplexity

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared" / "data"
PEER_PYTHON = BENCH / ".venv-peers" / "bin" / "python"
PPL_WINDOW = 512  # tokens per perplexity window in every benchmark table


def arguments(doc: str) -> argparse.ArgumentParser:
    """Model, calibration and perplexity options, identical across benchmarks."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32", help="the tables in bench/README.md are fp32")
    ap.add_argument("--calib", default=str(SHARED / "c4_sample" / "c4_sample_1000.jsonl"))
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--ppl-data", default=str(SHARED / "wikitext2" / "wiki.test.raw"))
    ap.add_argument("--ppl-windows", type=int, default=40)
    ap.add_argument("--no-peers", action="store_true", help="skip the llm-compressor side by side")
    return ap


def setup(args):
    """(model, calibration, perplexity windows), printing the baselines of this run."""
    lm = models.load(args.model, dtype=args.dtype)
    cspec = calib.CalibrationSpec(args.calib, args.nsamples, args.seqlen)
    cal = calib.prepare(lm.tokenizer, cspec).captured(lm.model)
    wins = [w["ids"] for w in perplexity.windows(lm.tokenizer, perplexity.load(args.ppl_data),
                                                  PPL_WINDOW)[: args.ppl_windows]]
    print(f"{args.model} {lm.dtype}, {torch.get_num_threads()} threads; calibration "
          f"{args.nsamples}x{args.seqlen} tokens (hash {cal.hash})", flush=True)
    return lm, cal, wins


def ppl(model, wins) -> float:
    nll = tok = 0
    for batch in iter_window_nll(model, wins, batch_size=4, progress=False):
        nll += sum(b[1] for b in batch)
        tok += sum(b[2] for b in batch)
    return math.exp(nll / tok)


def forward_seconds(model, tokens) -> float:
    """One plain forward over the calibration windows (the baseline)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for row in tokens:
            model(input_ids=row[None], use_cache=False)
    return time.perf_counter() - t0


def peers_ready() -> bool:
    if not PEER_PYTHON.exists():
        print(f"llm-compressor side by side skipped: {PEER_PYTHON} missing (run `make peers`)")
    return PEER_PYTHON.exists()


def peer(model: str, method: str, inputs: Path, *flags: str) -> dict:
    """One llm-compressor run in the peers venv; returns its JSON line."""
    cmd = [str(PEER_PYTHON), str(BENCH / "peer_llmcompressor.py"), "--model-dir",
           str(models.safetensors_folder(model)), "--inputs", str(inputs), "--method", method, *flags]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def finish(args, lm, cal, wins, t_fwd: float, runs: list[tuple]) -> None:
    """Time the baseline again (this machine drifts), then llm-compressor on the same windows.

    runs: (label, our seconds, our perplexity, peer method, peer flags) per setting."""
    print(f"baseline again at the end: {forward_seconds(lm.model, cal.tokens):.1f} s "
          f"(ratios above use the first, {t_fwd:.1f} s)")
    if args.no_peers or not peers_ready():
        return
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.pt"
        torch.save({"calibration": cal.tokens, "windows": wins}, inputs)
        print("\nllm-compressor 0.14, same windows, its own process (their fwd: its own plain "
              f"forward baseline)\n{'setting':22} {'ours s':>7} {'theirs s':>8} {'speed-up':>8} "
              f"{'ours ppl':>8} {'their ppl':>9} {'ppl diff':>8}  {'their fwd s':>11}")
        for label, secs, p, method, flags in runs:
            r = peer(args.model, method, inputs, *flags)
            print(f"{label:22} {secs:7.1f} {r['seconds']:8.1f} {r['seconds'] / secs:7.2f}x "
                  f"{p:8.2f} {r['ppl']:9.2f} {(p - r['ppl']) / r['ppl']:+8.1%}  "
                  f"{r['forward_seconds']:11.1f}", flush=True)
