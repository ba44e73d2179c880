"""Runs MODEL in onnxruntime on one input and checks its output against an expected one by
the tolerance rule (atol 1e-4, rtol 1e-3). Exit 0 within tolerance, 1 beyond, 2 on error.
The tests use it to show that what `convgraph rewrite` writes runs in onnxruntime.

Usage: data/venv/bin/python scripts/ort_check.py MODEL INPUT_PB EXPECTED_PB
"""

import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, numpy_helper


def load_pb(path):
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def main():
    model, inp, exp = sys.argv[1:4]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        (i,) = sess.get_inputs()
        (y,) = sess.run(None, {i.name: load_pb(inp)})
    except Exception as e:  # noqa: BLE001 - any failure to load or run is the answer
        print(f"onnxruntime failed: {e}")
        sys.exit(2)
    expected = load_pb(exp)
    if y.shape != expected.shape or y.dtype != expected.dtype:
        print(f"shape/dtype {y.shape} {y.dtype} != {expected.shape} {expected.dtype}")
        sys.exit(1)
    err = np.abs(y.astype(np.float64) - expected)
    ok = bool(np.all(err <= 1e-4 + 1e-3 * np.abs(expected)))
    print(f"{'OK' if ok else 'BEYOND TOLERANCE'}: max abs {err.max():.3e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
