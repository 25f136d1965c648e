"""A 6-point sweep (dense + magnitude 10..50%) of smollm2-135m on factoid (100 items) and MMLU
(100), run locally (one process, one thread) and on a local Ray instance with 2 single-threaded
workers, each into a fresh store; prints wall times and Ray's overhead, measured in the same run:
startup (ray.init), per-unit worker start (process + imports + model load, from the first record's
arrival), and serialisation (pickled size and time of the streamed records, the snapshots).

    python bench/sweep_ray.py [--limit 100] [--local-threads 1,2] [--json out.json]

The local baseline runs once per --local-threads value (1: what each Ray worker gets; 2: one
process using both cores, the alternative on this machine). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--local-threads", default="1,2", help="torch threads of the local runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    import torch

    from kickbench import executors, sweep
    from kickbench.compress.spec import CompressionSpec
    from kickbench.store import Store
    from kickbench.tasks import TaskSpec

    torch.set_num_threads(1)
    specs = [CompressionSpec("dense"), *(CompressionSpec("magnitude", x) for x in LEVELS)]
    tasks = [TaskSpec("factoid", limit=args.limit), TaskSpec("mmlu", limit=args.limit)]
    runs = sweep.plan([args.model], specs, tasks)
    settings = sweep.Settings(device="cpu", dtype="float32", batch_size=args.batch_size,
                              progress=False)
    out: dict = {"model": args.model, "points": len(specs), "limit": args.limit}
    tmp = Path(tempfile.mkdtemp(prefix="sweep_ray_"))

    locals_ = {}
    for threads in [int(x) for x in args.local_threads.split(",")]:
        torch.set_num_threads(threads)
        t = time.perf_counter()
        local = locals_[threads] = Store(tmp / f"local{threads}.sqlite")
        sweep.execute(runs, local, settings)
        out[f"local_{threads}_threads_s"] = time.perf_counter() - t
    torch.set_num_threads(1)
    out["local_s"] = out["local_1_threads_s"] if "local_1_threads_s" in out else None

    # Ray: time each phase, and every record's pickled size/time, by wrapping apply()
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    out["ray_init_s"] = time.perf_counter() - t
    sizes, pickle_s, first_record, real_apply = [], [0.0], {}, executors.apply
    t0 = time.perf_counter()

    def timed_apply(store, record):
        s = time.perf_counter()
        blob = pickle.dumps(record)
        pickle_s[0] += time.perf_counter() - s
        sizes.append(len(blob))
        if record[0] == "put_run":
            first_record.setdefault(record[1][1:3].__repr__(), time.perf_counter() - t0)
        real_apply(store, record)

    executors.apply = timed_apply
    snap_bytes = sum(len(pickle.dumps(executors.snapshot(Store(tmp / "ray.sqlite"), args.model,
                                                         s, tasks))) for s in specs)
    t = time.perf_counter()
    remote = Store(tmp / "ray.sqlite")
    sweep.execute(runs, remote, settings, executor=executors.RayExecutor(cpus_per_unit=1))
    out["ray_sweep_s"] = time.perf_counter() - t
    ray.shutdown()
    executors.apply = real_apply
    out["ray_total_s"] = out["ray_init_s"] + out["ray_sweep_s"]
    out["records"] = len(sizes)
    out["records_mb"] = sum(sizes) / 1e6
    out["records_pickle_s"] = pickle_s[0]
    out["snapshot_bytes_empty_store"] = snap_bytes
    out["first_put_run_after_s"] = min(first_record.values()) if first_record else None
    if out["local_s"]:
        out["ideal_ray_s"] = out["local_s"] / 2  # 2 single-threaded workers, no overhead
        out["overhead_s"] = out["ray_sweep_s"] - out["ideal_ray_s"]
        out["per_unit_overhead_s"] = out["overhead_s"] / len(specs) * 2  # 2 units side by side
        out["speedup_vs_local_1_thread"] = out["local_s"] / out["ray_total_s"]
    if "local_2_threads_s" in out:
        out["speedup_vs_local_2_threads"] = out["local_2_threads_s"] / out["ray_total_s"]
    def rows(store, by_key=True):
        """Samples by key, or by (spec, task) (keys also move with the code's versions)."""
        runs = dict(((k, (s, t)) for k, s, t in store.db.execute(
            "SELECT key, spec, task FROM runs")))
        return sorted((k if by_key else runs[k], i, o, m) for k, i, o, m in store.db.execute(
            "SELECT key, idx, output, metrics FROM samples"))

    for threads, local in locals_.items():  # fp32 sums may round differently across threads
        out[f"same_keys_as_local_{threads}"] = rows(local) == rows(remote)
        out[f"same_outputs_and_metrics_as_local_{threads}"] = (rows(local, False)
                                                               == rows(remote, False))
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
