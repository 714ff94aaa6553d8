#!/usr/bin/env bash
# The GPU check of issue 26, ready before any GPU is seen: one script, at most ~8 minutes on one
# GPU with 16 cores, from nothing but the repository. It measures, side by side in one run:
#   - extraction end to end (featcache extract into a fresh store) against the pure forward pass
#     (bench_extract.py --methods forward,featcache) for efficientnet_lite0 (its packaged ImageNet
#     weights), resnet50 and dinov2_small (random weights: speed only, nothing downloaded), at
#     float32 and mixed float16, then mixed with --jit and with --batch-size auto;
#   - the reader alone on one core and on every core, with and without JPEG draft decoding, and
#     tf.data for reference (bench_reader.py);
#   - one Dask worker on the GPU (--executor local:1) against one process (bench_distributed.py).
# Steps run in order of importance under a time budget (GPU_CHECK_BUDGET seconds, default 480);
# a step that would not fit is recorded as skipped, one that fails or hangs as such, and the rest
# still run. Results: benchmarks/results/gpu.json (every benchmark's own JSON inside) and a table.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry      # (or GPU_CHECK_DRY=1) every step at a tiny size on a
#                                           # CPU, ~2 minutes; writes a temporary file, not gpu.json
#   bash benchmarks/gpu_check.sh --prepare  # here, before a device call: copy the photo sets into
#                                           # benchmarks/.gpu_carry (the device has no network)
#   GPU_CHECK_STEPS=reader,dask bash benchmarks/gpu_check.sh   # only the steps named
#
# Python: $FEATCACHE_PYTHON, else .venv/bin/python, else (with a network) scripts/setup.sh makes
# .venv. The device machine lent through the `device` tool has NO network and NO TensorFlow, and
# .venv (about 3 GB) cannot travel to it (64 MiB carry limit): there the check needs an
# environment carried in (see benchmarks/README.md, "GPU check"). Data: benchmarks/.gpu_carry/data
# when present (carry it), else the featcache data cache (~/.cache/featcache/data).
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
export TF_FORCE_GPU_ALLOW_GROWTH=true  # the Dask worker and --batch-size auto share the GPU with others
export PYTHONUNBUFFERED=1

DRY=${GPU_CHECK_DRY:-0}
PREPARE=0
for arg in "$@"; do
    case "$arg" in
        --dry) DRY=1 ;;
        --prepare) PREPARE=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (use --dry, --prepare or --help)" >&2; exit 2 ;;
    esac
done
CARRY=benchmarks/.gpu_carry

find_python() {
    if [ -n "${FEATCACHE_PYTHON:-}" ]; then echo "$FEATCACHE_PYTHON"; return; fi
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import featcache, keras" 2>/dev/null; then
        echo .venv/bin/python; return
    fi
    # setup.sh needs PyPI: try it only where PyPI answers (the lent GPU machine has no network)
    if python3 -c "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=5)" \
            2>/dev/null; then
        bash scripts/setup.sh >&2 && { echo .venv/bin/python; return; }
    fi
    echo "gpu_check.sh: no Python with featcache: no usable .venv and no network to make one (scripts/setup.sh);" \
         "set FEATCACHE_PYTHON or carry an environment (benchmarks/README.md, GPU check)" >&2
    exit 2
}

if [ "$PREPARE" = 1 ]; then
    PY=$(find_python) || exit 2
    mkdir -p "$CARRY/data"
    for ds in orl-faces imagenet-samples; do
        src=$("$PY" -c "from featcache.ingest.sample_data import fetch; print(fetch('$ds'))") || exit 1
        rm -rf "${CARRY:?}/data/$ds" && cp -r "$src" "$CARRY/data/$ds"
    done
    echo "prepared $CARRY ($(du -sh "$CARRY" | cut -f1)): carry it to the device machine" >&2
    exit 0
fi

PY=$(find_python) || exit 2
[ -d "$CARRY/data" ] && export FEATCACHE_DATA="$PWD/$CARRY/data"
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-$([ "$DRY" = 1 ] && echo 300 || echo 480)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/featcache-gpu-check.XXXXXX")
RES="$WORK/results"
mkdir -p "$RES"
trap 'rm -rf "$WORK/data"' EXIT
if [ "$DRY" = 1 ]; then
    OUT="$WORK/gpu_check_dry.json"
else
    OUT=benchmarks/results/gpu.json
fi
command -v nvidia-smi >/dev/null 2>&1 \
    && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$RES/gpu.txt" 2>/dev/null
CORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")

# The images: the ORL photos, tiled into unique one-pixel variants (each its own digest and row)
# so that a GPU has enough batches to reach its steady state; 24 of them for a dry run.
if [ "$DRY" = 1 ]; then IMAGES=24; else IMAGES=${GPU_CHECK_IMAGES:-8000}; fi
"$PY" - "$WORK/data" "$IMAGES" <<'EOF' || { echo "gpu_check.sh: could not build the image tree" >&2; exit 1; }
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_extract import image_files, tiled_tree
from featcache.ingest.sample_data import fetch

root = fetch("orl-faces")
files = image_files(root)
n = int(sys.argv[2])
if n < len(files):  # a few photos of a few classes: symlinks, nothing re-encoded
    files = [f for f in files if f.parent.name in sorted({f.parent.name for f in files})[:4]][:n]
tiled_tree(files, root, Path(sys.argv[1]), n)
EOF

# run_step NAME SECONDS_CAP JSON_OUT COMMAND...: run one benchmark under what is left of the budget
run_step() {
    local name=$1 cap=$2 json=$3
    shift 3
    if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ ",$GPU_CHECK_STEPS," != *",$name,"* ]]; then return; fi
    local left=$((BUDGET - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        printf '%s\t-1\t0\t%s\t%s\n' "$name" "$json" "$*" >>"$RES/steps.tsv"
        echo "== $name: skipped (${left} s left of the ${BUDGET} s budget)" >&2
        return
    fi
    echo "== $name (at most ${limit} s): $*" >&2
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$RES/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$json" "$*" >>"$RES/steps.tsv"
    if [ "$rc" = 0 ]; then grep -v -E "^(round |WARNING|I0000|E0000|W0000)" "$RES/$name.log" | tail -n 12 >&2
    else echo "   exit $rc; last lines:" >&2; tail -n 5 "$RES/$name.log" >&2; fi
}

extract_step() {  # extract_step NAME CAP BACKBONE WEIGHTS PRECISION BATCH [--jit]
    local name=$1 cap=$2 backbone=$3 weights=$4 precision=$5 batch=$6
    shift 6
    local size=() repeats=2
    if [ "$DRY" = 1 ]; then
        repeats=1
        case "$backbone" in dinov2*) size=(--image-size 28) ;; *) size=(--image-size 32) ;; esac
        [ "$batch" = auto ] || batch=8
    fi
    run_step "$name" "$cap" "$RES/$name.json" "$PY" benchmarks/bench_extract.py --data "$WORK/data" \
        --backbone "$backbone" --weights "$weights" --precision "$precision" --batch-size "$batch" "${size[@]}" \
        --workers "$CORES" --repeats "$repeats" --methods forward,featcache --memory-sizes "" \
        --out "$RES/$name.json" "$@"
}

if [ "$DRY" = 1 ]; then
    # every kind of step once, at a tiny size: each backbone, mixed precision, XLA, auto batch
    extract_step extract-lite0-mixed-jit-auto 120 efficientnet_lite0 imagenet mixed auto --jit
    extract_step extract-resnet50-float32 90 resnet50 random float32 32
    extract_step extract-dinov2_small-float32 90 dinov2_small random float32 32
    run_step reader 60 "$RES/reader.json" "$PY" benchmarks/bench_reader.py --rounds 1 --repeats 1 --cores 1 \
        --methods featcache,featcache-draft --out "$RES/reader.json"
    run_step dask 120 "$RES/dask.json" "$PY" benchmarks/bench_distributed.py --data "$WORK/data" --parts a \
        --dask-workers 1 --repeats 1 --batch-size 8 --backbone resnet50 --weights random --image-size 32 \
        --out "$RES/dask.json"
else
    # the target first (ResNet50 mixed: end to end at >= 0.9x the forward pass), then the rest
    B=${GPU_CHECK_BATCH:-256}
    extract_step extract-resnet50-mixed 60 resnet50 random mixed "$B"
    extract_step extract-resnet50-float32 60 resnet50 random float32 "$B"
    extract_step extract-lite0-mixed 60 efficientnet_lite0 imagenet mixed "$B"
    extract_step extract-dinov2_small-mixed 60 dinov2_small random mixed "$B"
    run_step reader 75 "$RES/reader.json" "$PY" benchmarks/bench_reader.py --rounds 100 --repeats 2 \
        --out "$RES/reader.json"
    run_step dask 90 "$RES/dask.json" "$PY" benchmarks/bench_distributed.py --data "$WORK/data" --parts a \
        --dask-workers 1 --repeats 1 --batch-size "$B" --backbone resnet50 --weights random --precision mixed \
        --reader-threads "$CORES" --out "$RES/dask.json"
    extract_step extract-resnet50-mixed-jit 60 resnet50 random mixed "$B" --jit
    extract_step extract-resnet50-mixed-auto 60 resnet50 random mixed auto
    extract_step extract-lite0-float32 60 efficientnet_lite0 imagenet float32 "$B"
    extract_step extract-dinov2_small-float32 60 dinov2_small random float32 "$B"
    extract_step extract-lite0-mixed-jit 60 efficientnet_lite0 imagenet mixed "$B" --jit
    extract_step extract-dinov2_small-mixed-jit 60 dinov2_small random mixed "$B" --jit
    extract_step extract-lite0-mixed-auto 60 efficientnet_lite0 imagenet mixed auto
    extract_step extract-dinov2_small-mixed-auto 60 dinov2_small random mixed auto
fi

[ -f "$RES/steps.tsv" ] || { echo "gpu_check.sh: no step ran (GPU_CHECK_STEPS=${GPU_CHECK_STEPS:-})" >&2; exit 2; }
DRYFLAG=()
[ "$DRY" = 1 ] && DRYFLAG=(--dry)
"$PY" benchmarks/gpu_check_summary.py "$RES" "$OUT" --seconds $((SECONDS - START)) "${DRYFLAG[@]}"
rc=$?
if [ "$DRY" = 1 ]; then echo "(dry run: step logs in $RES)" >&2; fi
# a failed step fails the check (after every other step ran and the report was written)
if [ "$rc" = 0 ] && awk -F'\t' '$2 != 0 && $2 != -1 {bad=1} END {exit !bad}' "$RES/steps.tsv"; then rc=1; fi
exit $rc
