"""Merge the step results of ``benchmarks/gpu_check.sh`` into one JSON report and print its table.

Each step of the check wrote its own benchmark's JSON (bench_extract.py, bench_reader.py,
bench_distributed.py) and a line in ``steps.tsv`` (name, exit code, seconds, JSON path). This
reads them all, keeps every benchmark's full output under ``steps``, and puts the numbers the
issue asks for side by side: per backbone and precision, featcache end to end against the pure
forward pass; the reader per core with and without JPEG draft decoding; one Dask worker against
one process. A step that failed, timed out or was skipped for the time budget is listed as such.

    python benchmarks/gpu_check_summary.py RESULTS_DIR OUT.json [--dry]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def read_steps(folder: Path) -> list[dict]:
    steps = []
    for line in (folder / "steps.tsv").read_text().splitlines():
        name, rc, seconds, path, command = line.split("\t")
        step = {"name": name, "exit_code": int(rc), "seconds": float(seconds), "command": command}
        step["status"] = {0: "ok", 124: "timed out", 137: "timed out", -1: "skipped (time budget)"}.get(
            int(rc), "failed")
        if step["status"] == "ok" and Path(path).is_file():
            step["result"] = json.loads(Path(path).read_text())
        log = folder / f"{name}.log"
        if step["status"] != "ok" and log.is_file():
            step["log_tail"] = log.read_text()[-2000:]
        steps.append(step)
    return steps


def extraction_rows(steps: list[dict]) -> list[dict]:
    rows = []
    for s in steps:
        r = s.get("result")
        if not s["name"].startswith("extract") or not r:
            continue
        res, ratios = r["results"], r["ratios"]
        fwd, fc = res["forward"]["best"], res["featcache"]["best"]
        rows.append({"step": s["name"], "backbone": r["backbone"], "precision": r.get("precision", "float32"),
                     "jit": r.get("jit", False), "batch_size": r["batch_size"],
                     "batch_size_asked": r.get("batch_size_asked", r["batch_size"]), "images": r["images"],
                     "input_size": r["input_size"], "forward_images_per_s": fwd["images_per_s"],
                     "forward_cold_images_per_s": fwd["cold_images_per_s"],
                     "featcache_images_per_s": fc["images_per_s"],
                     "featcache_steady_images_per_s": fc.get("steady_images_per_s"),
                     "featcache_vs_forward": ratios["featcache_vs_forward"],
                     "featcache_steady_vs_forward": ratios.get("featcache_steady_vs_forward"),
                     "featcache_vs_forward_incl_build": ratios["featcache_vs_forward_incl_build"]})
    return rows


def table(report: dict) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"GPU check{' (DRY RUN: tiny sizes on this machine, not a measurement)' if report['dry'] else ''}: "
             f"{report['machine'].get('gpu') or 'no GPU seen'}, {report['machine']['cpus']} CPUs, "
             f"keras backend {report['machine'].get('keras_backend', '?')}", ""]
    rows = report["extraction"]
    if rows:
        lines += ["extraction: featcache end to end (b) against the pure forward pass (a), images/s",
                  f"{'backbone':<20}{'precision':<15}{'jit':<5}{'batch':>9}{'(a) fwd':>10}{'(b) e2e':>10}"
                  f"{'(b) steady':>11}{'e2e/(a)':>9}{'steady/(a)':>11}{'e2e/(a)+build':>14}"]
        for r in rows:
            batch = f"{r['batch_size']}{'*' if r['batch_size_asked'] == 'auto' else ''}"
            lines.append(f"{r['backbone']:<20}{r['precision']:<15}{'yes' if r['jit'] else 'no':<5}{batch:>9}"
                         f"{r['forward_images_per_s']:>10.0f}{r['featcache_images_per_s']:>10.0f}"
                         f"{fmt(r['featcache_steady_images_per_s'], '.0f'):>11}{r['featcache_vs_forward']:>9.2f}"
                         f"{fmt(r['featcache_steady_vs_forward'], '.2f'):>11}"
                         f"{r['featcache_vs_forward_incl_build']:>14.2f}")
        lines.append("(* = --batch-size auto, the size it chose; steady = after the first, tracing batch; "
                     "+build = (a) with its own model build and first trace)")
    reader = report.get("reader")
    if reader:
        cores = sorted({c for m in reader["best_images_per_s"].values() for c in m}, key=int)
        lines += ["", f"reader alone ({reader['images']} JPEG reads -> {reader['size']} px), images/s (per core)",
                  f"{'method':<17}" + "".join(f"{c + ' core(s)':>22}" for c in cores)]
        for m, by in reader["best_images_per_s"].items():
            cells = "".join(f"{f'{by[c]:.0f} ({by[c] / int(c):.0f})':>22}" for c in cores)
            lines.append(f"{m:<17}{cells}")
    dask = report.get("dask")
    if dask:
        lines += ["", f"Dask: {dask['backbone']} {dask.get('precision', 'float32')} on {dask['images']} images "
                      "(best round, warm)", f"{'mode':<16}{'img/s':>9}{'x single':>10}"]
        for k, v in dask["best_images_per_s"].items():
            lines.append(f"{k:<16}{v:>9.0f}{dask['ratio_to_single'][k]:>10.2f}")
    bad = [s for s in report["steps"] if s["status"] != "ok"]
    lines += ["", f"steps: {len(report['steps']) - len(bad)} ok of {len(report['steps'])}, "
                  f"{report['seconds']:.0f} s in all"]
    lines += [f"  {s['name']}: {s['status']} (exit {s['exit_code']}, {s['seconds']:.0f} s)" for s in bad]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--seconds", type=float, default=0.0, help="the whole check's wall time")
    args = ap.parse_args(argv)
    steps = read_steps(args.results)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()}
    gpu = args.results / "gpu.txt"
    if gpu.is_file() and gpu.read_text().strip():
        machine["gpu"] = gpu.read_text().strip()
    for s in steps:  # the benchmarks say which Keras backend and versions they ran on
        m = (s.get("result") or {}).get("machine") or {}
        machine.update({k: v for k, v in m.items() if k in ("keras", "keras_backend", "tensorflow", "gpus", "python")})
    by_name = {s["name"]: s for s in steps}
    report = {"benchmark": "gpu_check", "dry": args.dry, "seconds": args.seconds, "machine": machine,
              "extraction": extraction_rows(steps),
              "reader": (by_name.get("reader") or {}).get("result"),
              "dask": ((by_name.get("dask") or {}).get("result") or {}).get("overhead"),
              "steps": steps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
