#!/usr/bin/env bash
# Makes the test data that is not in the repository, under data/ (ignored by git):
#   data/venv/         a Python venv with scripts/requirements.txt (PyTorch, onnx, onnxruntime)
#   data/torchvision/  torchvision nets exported by both PyTorch exporters, with onnxruntime's
#                      outputs (scripts/export_torchvision.py)
#   data/onnx-cases/   the ONNX backend-test cases in scope (tests/conformance/cases.tsv),
#                      from the pinned onnx wheel (scripts/make_onnx_cases.py)
# Needs only python3 and the package registries. Each step is skipped when its inputs (the
# scripts and pins) are unchanged since it last completed, so rerunning it is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

venv_key=$(digest scripts/requirements.txt)
if ! stamp_ok data/venv/.stamp "$venv_key"; then
    echo "fetch-data: installing scripts/requirements.txt into data/venv"
    python3 -m venv data/venv
    data/venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
    echo "$venv_key" > data/venv/.stamp
fi
py=data/venv/bin/python

tv_key=$(digest scripts/requirements.txt scripts/export_torchvision.py)
if ! stamp_ok data/torchvision/.stamp "$tv_key"; then
    echo "fetch-data: exporting torchvision nets into data/torchvision"
    rm -rf data/torchvision.partial
    # The exporters' progress lines and warnings go to the log; on failure its end is shown.
    "$py" -W ignore scripts/export_torchvision.py data/torchvision.partial > data/export_torchvision.log 2>&1 \
        || { tail -30 data/export_torchvision.log; exit 1; }
    grep -E '^[a-z0-9_]+-[a-z0-9_]+: ' data/export_torchvision.log | tr '\n' ' '; echo
    rm -rf data/torchvision
    mv data/torchvision.partial data/torchvision
    echo "$tv_key" > data/torchvision/.stamp
fi

cases_key=$(digest scripts/requirements.txt scripts/make_onnx_cases.py tests/conformance/cases.tsv)
if ! stamp_ok data/onnx-cases/.stamp "$cases_key"; then
    echo "fetch-data: writing the ONNX backend-test cases into data/onnx-cases"
    rm -rf data/onnx-cases.partial
    "$py" -W ignore scripts/make_onnx_cases.py tests/conformance/cases.tsv data/onnx-cases.partial
    rm -rf data/onnx-cases
    mv data/onnx-cases.partial data/onnx-cases
    echo "$cases_key" > data/onnx-cases/.stamp
fi
