"""GPU check for the calibrated compressors and bitsandbytes, on random models of real shapes.

    .venv/bin/python bench/gpu_check.py            # on a CUDA machine (bf16)
    .venv/bin/python bench/gpu_check.py --smoke    # tiny shapes on CPU: checks the script runs

1. A Llama with 7B shapes (2 layers) in bf16: Wanda and SparseGPT at 50% and 2:4, GPTQ w4 g128,
   on 128 x 2048 random-token calibration; seconds per layer and peak GPU memory.
2. A Llama with 1B shapes: bf16 vs bitsandbytes int8 and NF4: load, one forward, footprint,
   tokens/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from kickbench import compress, models
from kickbench.compress import calibration as calib
from kickbench.compress.spec import CompressionSpec

SHAPES = {  # hidden, intermediate, heads, kv heads, layers, vocab
    "7b": (4096, 11008, 32, 32, 2, 32000), "1b": (2048, 5632, 32, 4, 22, 32000),
    "smoke": (128, 256, 4, 2, 2, 1000),
}


def random_llama(shape: str, dtype, device) -> LlamaForCausalLM:
    h, i, heads, kv, layers, vocab = SHAPES[shape]
    config = LlamaConfig(hidden_size=h, intermediate_size=i, num_attention_heads=heads,
                         num_key_value_heads=kv, num_hidden_layers=layers, vocab_size=vocab,
                         max_position_embeddings=4096)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def compressors(shape, dtype, device, nsamples, seqlen):
    model = random_llama(shape, dtype, device)
    vocab = model.config.vocab_size
    tokens = torch.randint(0, vocab, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
    cal = calib.Calibration(calib.CalibrationSpec("random tokens", nsamples, seqlen), tokens,
                            calib.tokens_hash(tokens)).captured(model)
    layers = len(compress.layers.decoder_blocks(model))
    print(f"{shape} Llama, {layers} layers, {dtype}, calibration {nsamples}x{seqlen} random tokens")
    for spec in [CompressionSpec("wanda", 0.5), CompressionSpec("wanda", pattern="2:4"),
                 CompressionSpec("sparsegpt", 0.5), CompressionSpec("sparsegpt", pattern="2:4"),
                 CompressionSpec("gptq", bits=4, group_size=128)]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with compress.applied(model, spec, cal) as rep:
            sync(device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        print(f"  {spec.label:22} {rep['seconds'] / layers:7.2f} s/layer  peak {peak:6.2f} GiB",
              flush=True)


def tokens_per_second(model, device, vocab, n=512) -> float:
    ids = torch.randint(0, vocab, (1, n), device=device)
    with torch.no_grad():
        model(input_ids=ids[:, :16])
        sync(device)
        t0 = time.perf_counter()
        model(input_ids=ids)
        sync(device)
    return n / (time.perf_counter() - t0)


def bitsandbytes(shape, dtype, device):
    model = random_llama(shape, dtype, device)
    vocab = model.config.vocab_size
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(models.smollm2_folder()).save_pretrained(folder)
        dense = models.load(folder, device=device, dtype=dtype)
        print(f"{shape} Llama: {dtype} {dense.model.get_memory_footprint() / 2**30:.2f} GiB, "
              f"{tokens_per_second(dense.model, device, vocab):.0f} tok/s")
        for spec in [CompressionSpec("bnb-int8"), CompressionSpec("bnb-nf4")]:
            with compress.compressed(dense, spec) as (q, rep):
                print(f"  {spec.label:9} load {rep['seconds']:5.1f} s, "
                      f"{rep['loaded_bytes'] / 2**30:.2f} GiB, "
                      f"{tokens_per_second(q.model, device, vocab):.0f} tok/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU")
    args = ap.parse_args()
    if args.smoke:
        compressors("smoke", torch.float32, torch.device("cpu"), 4, 64)
        bitsandbytes("smoke", torch.float32, torch.device("cpu"))
        return
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to check the script on CPU")
    cuda = torch.device("cuda")
    compressors("7b", torch.bfloat16, cuda, 128, 2048)
    bitsandbytes("1b", torch.bfloat16, cuda)


if __name__ == "__main__":
    main()
