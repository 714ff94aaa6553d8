#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TensorFlow's C++ start-up chatter
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check featcache tests benchmarks scripts
exec .venv/bin/python -m pytest -q "$@"
