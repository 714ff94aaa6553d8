#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TensorFlow's C++ start-up chatter
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check featcache tests benchmarks scripts
# Two worker processes (FEATCACHE_TEST_WORKERS=0 runs in this process): most of a test's time is
# TensorFlow start-up and tracing on one core, so two processes finish ~1.4x sooner on 2 cores.
# --dist loadfile: a file's tests run in one worker, so each module-scoped fixture (a real backbone
# over real photos, a trained run) is built once, not once per worker.
exec .venv/bin/python -m pytest -q -n "${FEATCACHE_TEST_WORKERS:-2}" --dist loadfile "$@"
