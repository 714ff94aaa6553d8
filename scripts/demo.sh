#!/usr/bin/env bash
# Set up (if needed) and run the whole story on real photos with the default pretrained backbone:
# extract -> fit-head -> predict on held-out images, printing the accuracy. Offline; a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
