"""Runs a convgraph binary (the release build by default) on every exported case under
data/torchvision, with and without `--passes lower-1x1-conv`, and compares each output with
onnxruntime's recorded one by the tolerance rule (atol 1e-4, rtol 1e-3). Also asserts that
`inspect --passes lower-1x1-conv --json` leaves no 1x1 Conv the pass could lower (group 1).

The Rust tests (tests/torchvision.rs) check the same numbers in the test profile; this is the
release-build check, and it prints the error figures.

Usage: data/venv/bin/python scripts/check_exports.py [BINARY] [CASES_DIR]
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from onnx import TensorProto, numpy_helper

ATOL, RTOL = 1e-4, 1e-3


def load_pb(path):
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def run(binary, case, passes):
    with tempfile.TemporaryDirectory() as out:
        cmd = [binary, "run", os.path.join(case, "model.onnx"), "--output-dir", out,
               "--input", os.path.join(case, "test_data_set_0", "input_0.pb")]
        if passes:
            cmd += ["--passes", passes]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        (name,) = os.listdir(out)
        return np.load(os.path.join(out, name))


def unlowered_1x1(binary, case):
    out = subprocess.run(
        [binary, "inspect", os.path.join(case, "model.onnx"), "--passes", "lower-1x1-conv", "--json"],
        check=True, capture_output=True, text=True).stdout
    return [n["name"] for n in json.loads(out)["nodes"]
            if n["op"] == "Conv" and "kernel_shape: Some([1, 1])" in n["attrs"]
            and "group: 1 " in n["attrs"] + " "]


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/convgraph"
    root = sys.argv[2] if len(sys.argv) > 2 else "data/torchvision"
    failed = 0
    for case in sorted(os.listdir(root)):
        path = os.path.join(root, case)
        if not os.path.exists(os.path.join(path, "model.onnx")):
            continue
        expected = load_pb(os.path.join(path, "test_data_set_0", "output_0.pb"))
        for passes in ["", "lower-1x1-conv"]:
            actual = run(binary, path, passes)
            err = np.abs(actual.astype(np.float64) - expected)
            ok = actual.shape == expected.shape and bool(np.all(err <= ATOL + RTOL * np.abs(expected)))
            rel = float(np.max(err / np.maximum(np.abs(expected), 1e-30)))
            print(f"{'PASS' if ok else 'FAIL'} {case:30} {passes or '(none)':15} "
                  f"max abs {err.max():.2e}  max rel {rel:.2e}  |y|max {np.abs(expected).max():.3g}")
            failed += not ok
        left = unlowered_1x1(binary, path)
        if left:
            print(f"FAIL {case}: 1x1 group-1 Convs left after lower-1x1-conv: {left}")
            failed += 1
    print(f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
