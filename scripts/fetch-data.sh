#!/usr/bin/env bash
# Makes the test data that is not in the repository, under data/ (ignored by git):
#   data/venv/         a Python venv with scripts/requirements.txt (PyTorch, onnx, onnxruntime)
#   data/torchvision/  torchvision nets exported by both PyTorch exporters, with onnxruntime's
#                      outputs (scripts/export_torchvision.py)
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
    # Warnings from the exporters are noise here; the script prints one line per case.
    "$py" -W ignore scripts/export_torchvision.py data/torchvision.partial 2> data/export_torchvision.log \
        || { tail -30 data/export_torchvision.log; exit 1; }
    rm -rf data/torchvision
    mv data/torchvision.partial data/torchvision
    echo "$tv_key" > data/torchvision/.stamp
fi
