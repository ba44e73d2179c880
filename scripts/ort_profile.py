"""Per-node times of onnxruntime on a model, single-threaded, for comparing node by node with
`convgraph bench MODEL --threads 1 --profile --top N`.

onnxruntime fuses Conv with a following Relu/Clip and renames nodes after their outputs
(`..._nchwc` for its NCHWc convs), so match nodes by the names in the model.

Usage: python scripts/ort_profile.py MODEL.onnx [--iters 10] [--top 15]
Needs onnxruntime (data/venv after scripts/fetch-data.sh).
"""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = os.path.join(tmp, "ort")
        s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {
            i.name: rng.standard_normal(
                [d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32
            )
            for i in s.get_inputs()
        }
        for _ in range(a.warmup):
            s.run(None, feed)
        times = []
        for _ in range(a.iters):
            t = time.perf_counter()
            s.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
        with open(s.end_profiling()) as f:
            events = json.load(f)
    total = collections.defaultdict(float)
    by_op = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["name"][: -len("_kernel_time")]] += e["dur"]
            op = by_op[e.get("args", {}).get("op_name", "?")]
            op[0] += 1
            op[1] += e["dur"]
    runs = a.warmup + a.iters
    print(f"{a.model}: onnxruntime median {statistics.median(times):.3f} ms over {a.iters} runs, 1 thread")
    print("mean ms per run (all runs, warm-up included), per op type (onnxruntime's fused ops):")
    for op, (n, us) in sorted(by_op.items(), key=lambda kv: -kv[1][1]):
        print(f"{us / runs / 1000:9.3f}  {op} ({n // runs} nodes)")
    print("slowest nodes:")
    for name, us in sorted(total.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"{us / runs / 1000:9.3f}  {name}")


if __name__ == "__main__":
    main()
