"""Times convgraph, tract and onnxruntime on the exported torchvision nets, interleaved, and
prints the README's speed table (markdown) with geometric means.

For every net, ROUNDS rounds are run. A round times each runtime the same way, ITERS timed
runs in a row after the warm-up, next to the one it is compared with:
- convgraph alone (`convgraph bench --json`, a process of its own) and ITERS onnxruntime
  runs in this process, onnxruntime second in even rounds and first in odd ones;
- then `convgraph bench --vs tract --json`, in which convgraph and tract alternate run by
  run, for the tract ratio.
Each comparison is thus like for like: onnxruntime's runs follow its own, as convgraph's
alone do, and convgraph's runs interleaved with tract's find their caches as cold as
tract's do. (Up to 2026-12-07 the onnxruntime ratio used the interleaved figure; on a small
net whose weights fit in L3 that cost convgraph about 4% against onnxruntime.) The time
per runtime is the median of its round medians; the ratios are the medians of the
per-round ratios, so a slow phase of the machine that lasts a round hits both sides of a
ratio rather than one: this machine's speed wanders by up to 1.5x within minutes, more for
convgraph and tract than for onnxruntime.

With --memory, each net is also run once by `convgraph run --engine convgraph` and once by
`convgraph run --engine tract` (load, plan or optimize, one run), each in its own process,
and the peak resident set size of each process is reported (GNU time's %M).

Usage: python scripts/bench_nets.py [--threads N] [--rounds R] [--iters K] [--memory]
           [--exporter legacy] [--binary target/release/convgraph] [NET ...]
Needs data/torchvision (scripts/fetch-data.sh) and a release build (cargo build --release).
onnxruntime gets the same intra-op thread count as convgraph; tract runs one thread.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

NETS = [
    "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "shufflenet_v2_x1_0",
    "efficientnet_b0", "googlenet", "densenet121", "regnet_x_400mf",
]


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_feed(session):
    feed = {}
    rng = np.random.default_rng(0)
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feed[i.name] = rng.standard_normal(shape, dtype=np.float32)
    return feed


def ort_median_ms(session, feed, iters, warmup):
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def convgraph_bench(binary, model, threads, iters, warmup, vs_tract):
    """`convgraph bench --json` in its own process: its median, and tract's with vs_tract."""
    cmd = [binary, "bench", model, "--threads", str(threads), "--iters", str(iters),
           "--warmup", str(warmup), "--json"]
    out = subprocess.run(cmd + (["--vs", "tract"] if vs_tract else []),
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return r["median_ms"], r.get("tract_median_ms")


def peak_rss_mb(binary, model, engine, threads):
    """Peak RSS of one `convgraph run --engine ENGINE` process, in MiB, as GNU time reports
    it. (Not os.wait4 from here: a child's ru_maxrss also counts the memory it had as a
    fork of this Python process, onnxruntime sessions included, before its exec.)"""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss_kb=%M", binary, "run", model, "--engine", engine,
         "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"convgraph run --engine {engine} {model} failed: {out.stderr}")
    kb = [line for line in out.stderr.splitlines() if line.startswith("maxrss_kb=")][-1]
    return int(kb.removeprefix("maxrss_kb=")) / 1024


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("nets", nargs="*", default=NETS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--exporter", default="legacy")
    ap.add_argument("--binary", default="target/release/convgraph")
    ap.add_argument("--memory", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} not found: run `cargo build --release` first")

    rows = []
    mem = {}
    for net in a.nets:
        model = f"data/torchvision/{net}-{a.exporter}/model.onnx"
        if not os.path.exists(model):
            sys.exit(f"{model} not found: run scripts/fetch-data.sh first")
        session = ort_session(model, a.threads)
        feed = ort_feed(session)
        cg, cgt, tr, ox = [], [], [], []
        for r in range(a.rounds):
            if r % 2 == 1:
                ox.append(ort_median_ms(session, feed, a.iters, a.warmup))
            cg.append(convgraph_bench(a.binary, model, a.threads, a.iters, a.warmup, False)[0])
            if r % 2 == 0:
                ox.append(ort_median_ms(session, feed, a.iters, a.warmup))
            c, t = convgraph_bench(a.binary, model, a.threads, a.iters, a.warmup, True)
            cgt.append(c)
            tr.append(t)
        row = (net, statistics.median(cg), statistics.median(cgt), statistics.median(tr),
               statistics.median(ox),
               statistics.median(c / t for c, t in zip(cgt, tr)),
               statistics.median(c / o for c, o in zip(cg, ox)))
        rows.append(row)
        print(f"{net}: convgraph {row[1]:.2f} ms alone, {row[2]:.2f} ms with tract, "
              f"tract {row[3]:.2f} ms, onnxruntime {row[4]:.2f} ms", file=sys.stderr)
        if a.memory:
            mem[net] = (peak_rss_mb(a.binary, model, "convgraph", a.threads),
                        peak_rss_mb(a.binary, model, "tract", a.threads))

    print(f"| net ({a.exporter}, {a.threads} thread{'s' if a.threads > 1 else ''}) "
          "| convgraph ms | convgraph ms with tract | tract ms | onnxruntime ms "
          "| convgraph/tract | convgraph/onnxruntime |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for net, c, ct, t, o, rt, ro in rows:
        print(f"| {net} | {c:.2f} | {ct:.2f} | {t:.2f} | {o:.2f} | {rt:.2f} | {ro:.2f} |")
    print(f"| geometric mean | | | | | {geomean([r[5] for r in rows]):.2f} "
          f"| {geomean([r[6] for r in rows]):.2f} |")
    if a.memory:
        print()
        print("| net | convgraph peak RSS MiB | tract peak RSS MiB | ratio |")
        print("|---|---:|---:|---:|")
        for net, (c, t) in mem.items():
            print(f"| {net} | {c:.0f} | {t:.0f} | {c / t:.2f} |")


if __name__ == "__main__":
    main()
