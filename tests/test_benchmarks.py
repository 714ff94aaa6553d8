"""benchmarks/gpu_check.sh works before any GPU is seen: its dry mode (the cheapest step, the
reader alone) runs on this CPU machine, writes its report to a temporary file, never to
benchmarks/results/gpu.json, and the report holds the step's own numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_gpu_check_dry_runs_a_step_and_reports_it_in_a_temporary_file(tmp_path):
    gpu_json = ROOT / "benchmarks" / "results" / "gpu.json"
    before = gpu_json.stat().st_mtime_ns if gpu_json.exists() else None
    env = {**os.environ, "TMPDIR": str(tmp_path), "GPU_CHECK_STEPS": "reader", "FEATCACHE_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    written = re.search(r"wrote (\S+gpu_check_dry\.json)", proc.stdout)
    assert written and Path(written.group(1)).is_relative_to(tmp_path), proc.stdout
    report = json.loads(Path(written.group(1)).read_text())
    assert report["dry"] is True
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("reader", "ok")]
    assert set(report["reader"]["best_images_per_s"]) == {"featcache", "featcache-draft"}
    assert all(v > 0 for m in report["reader"]["best_images_per_s"].values() for v in m.values())
    assert "DRY RUN" in proc.stdout and "featcache-draft" in proc.stdout
    assert (gpu_json.stat().st_mtime_ns if gpu_json.exists() else None) == before


def test_gpu_check_refuses_an_unknown_argument_and_names_a_step_filter_that_matches_nothing(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument --fast" in proc.stderr
    env = {**os.environ, "TMPDIR": str(tmp_path), "GPU_CHECK_STEPS": "nothing", "FEATCACHE_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "no step ran" in proc.stderr
