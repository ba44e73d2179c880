"""Export torchvision conv nets to ONNX with both PyTorch exporters, and record onnxruntime's
outputs on seeded inputs as ONNX backend-test case folders.

Each case is a folder `data/torchvision/<arch>-<exporter>/` holding `model.onnx` (plus
`model.onnx.data` when the exporter writes the weights as external data) and
`test_data_set_0/{input_0.pb, output_0.pb}`: the layout of the ONNX backend tests, so the same
reader (and `convgraph conformance`) serves both. The nets are not in the repository: their
weights are random (seeded), which is all a cross-check between runtimes needs. BatchNorm
statistics are randomised too, so BatchNorm is not an identity and folding it is tested.

Exporters:
  legacy    TorchScript exporter (`dynamo=False`), opset 17, symbolic batch dimension `batch`
            (the test feeds batch 2);
  legacy_nofold
            the same with `do_constant_folding=False`, static batch 1: BatchNormalization
            nodes and the shape arithmetic stay in the graph, as in models whose exporter did
            not fold them (what fold-batchnorm and fold-constants are for);
  dynamo18/dynamo20
            the torch.export-based exporter at opsets 18 and 20, static shapes, weights as
            external data (the exporter's default).

Usage: python3 scripts/export_torchvision.py OUT_DIR [ARCH ...]
"""

import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from onnx import numpy_helper

ARCHS = {
    "resnet18": lambda: torchvision.models.resnet18(),
    "resnet50": lambda: torchvision.models.resnet50(),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(),
    "squeezenet1_1": lambda: torchvision.models.squeezenet1_1(),
    "shufflenet_v2_x1_0": lambda: torchvision.models.shufflenet_v2_x1_0(),
    "googlenet": lambda: torchvision.models.googlenet(aux_logits=False, init_weights=True),
    "densenet121": lambda: torchvision.models.densenet121(),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(),
    "regnet_x_400mf": lambda: torchvision.models.regnet_x_400mf(),
}

EXPORTERS = ["legacy", "legacy_nofold", "dynamo18", "dynamo20"]


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ARCHS[arch]()
    # Fresh BatchNorms have mean 0, var 1, weight 1, bias 0: nearly an identity. Give them
    # statistics like a trained net's so that BatchNorm (and folding it) does real work.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def export(model: torch.nn.Module, exporter: str, path: str) -> None:
    x = torch.zeros(1, 3, 224, 224)
    if exporter == "legacy":
        torch.onnx.export(
            model, (x,), path, dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    elif exporter == "legacy_nofold":
        torch.onnx.export(
            model, (x,), path, dynamo=False, opset_version=17, do_constant_folding=False,
            input_names=["input"], output_names=["output"],
        )
    else:
        opset = int(exporter.removeprefix("dynamo"))
        torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset)


def write_case(case_dir: str, arch: str, exporter: str) -> None:
    os.makedirs(case_dir, exist_ok=True)
    model_path = os.path.join(case_dir, "model.onnx")
    with torch.no_grad():
        export(build(arch), exporter, model_path)
    onnx.checker.check_model(model_path)

    batch = 2 if exporter == "legacy" else 1
    rng = np.random.default_rng(42)
    x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    outs = sess.run(None, {inp.name: x})

    data_dir = os.path.join(case_dir, "test_data_set_0")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x, inp.name).SerializeToString())
    for i, (o, y) in enumerate(zip(sess.get_outputs(), outs)):
        with open(os.path.join(data_dir, f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(y, o.name).SerializeToString())


def main() -> None:
    out = sys.argv[1]
    archs = sys.argv[2:] or list(ARCHS)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for arch in archs:
        for exporter in EXPORTERS:
            case_dir = os.path.join(out, f"{arch}-{exporter}")
            t0 = time.time()
            write_case(case_dir, arch, exporter)
            print(f"{arch}-{exporter}: {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
