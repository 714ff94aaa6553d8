#!/usr/bin/env bash
# Set up (if needed) and run the whole story on real photos with the default pretrained backbone:
# extract -> fit-head -> predict on held-out images, printing the accuracy. Offline; a few minutes.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TensorFlow's C++ start-up chatter
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
