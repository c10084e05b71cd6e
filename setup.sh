#!/usr/bin/env bash
# Install everything the project needs into the current Python (3.10+), offline-safe:
# torch and torchvision come first, pinned, so pip takes the wheels this machine has on disk.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet --disable-pip-version-check -e ".[dev,parquet]"
