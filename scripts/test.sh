#!/usr/bin/env bash
# The test command: make the data the tests need (cached under data/), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-data.sh
cargo nextest run --no-fail-fast "$@"
# nextest does not run doctests: the rustdoc examples of the public API.
cargo test --doc
