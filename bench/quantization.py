"""RTN, GPTQ, AWQ and bitsandbytes on smollm2-135m: time, WikiText-2 perplexity, size, speed.

    .venv/bin/python bench/quantization.py [--nsamples 32 --seqlen 512 --ppl-windows 40]

Same calibration and perplexity windows as bench/pruning.py. Baselines measured in the same
run: one plain forward over the calibration set, and the dense model's perplexity and
scoring throughput (perplexity tokens per second). bitsandbytes rows load a second model
from the safetensors copy; their footprint is what the loaded model occupies. Then
llm-compressor's GPTQ and AWQ run the same settings in bench/.venv-peers.
"""

from __future__ import annotations

import time

from common import arguments, finish, forward_seconds, ppl, setup

from kickbench import compress
from kickbench.compress.spec import CompressionSpec

SETTINGS = [dict(bits=4), dict(bits=4, group_size=64), dict(bits=3, group_size=64),
            dict(bits=2, group_size=64)]
GRID_METHODS = ("rtn", "gptq", "awq")


def timed_ppl(model, wins) -> tuple[float, float]:
    """(perplexity, scored tokens per second)."""
    t0 = time.perf_counter()
    p = ppl(model, wins)
    return p, sum(len(w) - 1 for w in wins) / (time.perf_counter() - t0)


def main():
    ap = arguments(__doc__)
    ap.add_argument("--methods", default="rtn,gptq,awq,bnb",
                    help="subset of rtn, gptq, awq, bnb (e.g. rerun gptq after a change)")
    ap.add_argument("--settings", default=None,
                    help="only these grids, e.g. 'w4 g64,w3 g64' (default: all of SETTINGS)")
    ap.add_argument("--no-awq-clip", action="store_true",
                    help="AWQ without its clipping search (scales only, as llm-compressor's)")
    args = ap.parse_args()
    wanted = set(args.methods.split(","))
    lm, cal, wins = setup(args)
    t_fwd = forward_seconds(lm.model, cal.tokens)
    dense, dense_tps = timed_ppl(lm.model, wins)
    dense_mb = lm.model.get_memory_footprint() / 1e6
    print(f"baseline: one forward over the calibration set {t_fwd:.1f} s; dense perplexity "
          f"{dense:.2f} on {len(wins)}x512 WikiText-2 tokens, {dense_tps:.0f} tok/s, "
          f"{dense_mb:.0f} MB loaded ({lm.dtype})")
    print(f"{'setting':22} {'seconds':>8} {'x fwd':>6} {'ppl':>8} {'bits/w':>7} {'size':>6} "
          f"{'loaded MB':>9} {'tok/s':>6} {'layer err':>9}")
    ours = {}
    grids = SETTINGS if args.settings is None else [
        {"bits": int(t.split()[0][1:]), **({"group_size": int(t.split()[1][1:])} if " " in t.strip() else {})}
        for t in args.settings.split(",")]
    awq = {"options": {"awq_clip": False}} if args.no_awq_clip else {}
    specs = [CompressionSpec(m, **s, **(awq if m == "awq" else {}))
             for s in grids for m in GRID_METHODS if m in wanted]
    if "bnb" in wanted:
        specs += [CompressionSpec("bnb-int8"), CompressionSpec("bnb-nf4"),
                  CompressionSpec("bnb-nf4", double_quant=True)]
    for spec in specs:
        with compress.compressed(lm, spec, cal if compress.needs_calibration(spec) else None) \
                as (clm, rep):
            p, tps = timed_ppl(clm.model, wins)
            loaded = rep.get("loaded_bytes", clm.model.get_memory_footprint()) / 1e6
        errs = [v["error"] for v in rep["layers"].values() if "error" in v]
        err = f"{sum(errs) / len(errs):.3f}" if errs else "-"
        ours[spec] = (rep["seconds"], p)
        size = rep["size"]
        print(f"{spec.label:22} {rep['seconds']:8.1f} {rep['seconds'] / t_fwd:5.2f}x {p:8.2f} "
              f"{size['bits_per_weight']:7.2f} {size['size_fraction']:6.1%} {loaded:9.0f} "
              f"{tps:6.0f} {err:>9}", flush=True)
    finish(args, lm, cal, wins, t_fwd, [
        (spec.label, secs, p, spec.method, ["--bits", str(spec.bits), "--group-size",
                                            str(spec.group_size or 0)]
         + ["--act-order"] * spec.act_order + ["--symmetric"] * spec.symmetric)
        for spec, (secs, p) in ours.items() if spec.method in ("gptq", "awq")])


if __name__ == "__main__":
    main()
