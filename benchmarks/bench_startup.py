"""Benchmark what the head commands cost from the command line: wall time of a fresh process.

"Heads in seconds" holds for the fit; a command also pays its imports. Each command below runs
in a fresh Python process, interleaved with the others for ``--rounds`` rounds (a disturbance on
a shared machine hits all alike), and is compared with the yardstick of issue 26,
``python -c "import sklearn.linear_model, zarr"`` (what any scikit-learn probe over a Zarr store
pays before its first line of work), measured in the same rounds. Each process also reports
whether TensorFlow got imported: logreg and knn need only numpy and scikit-learn, so their
commands must not import it (featcache.cli.common.QuietTensorFlowFinder: TensorFlow is imported
where a backbone or a Keras head needs it, not up front).

  baseline           python -c "import sklearn.linear_model, zarr"
  import cli         python -c "import featcache.cli"
  fit-head logreg    featcache fit-head STORE --head logreg   (target: at most 3x the baseline)
  ... eager TF       the same with TensorFlow imported up front, as before the change
  fit-head knn, sweep logreg (3 C values), compare logreg+knn, audit
  fit-head mlp       a Keras head, 5 epochs: TensorFlow imported (quietly), for reference

    python benchmarks/bench_startup.py                   # ORL store built first (~30 s), 3 rounds
    python benchmarks/bench_startup.py --store S.zarr --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "startup.json"

# Runs featcache's CLI as the console script does, and says on exit whether TensorFlow was imported.
RUN_CLI = ("import atexit, os, sys\n"
           "atexit.register(lambda: open(os.environ['BENCH_MODULES'], 'w').write(str('tensorflow' in sys.modules)))\n"
           "if os.environ.get('BENCH_EAGER_TF'):\n"
           "    import featcache.cli.common as c\n"
           "    c.install_quiet_tensorflow = c.import_tensorflow_quietly  # the behaviour before: TF up front\n"
           "from featcache.cli import main\n"
           "sys.argv = ['featcache', *sys.argv[1:]]\n"
           "main()\n")
REPORT_MODULES = ("import atexit, os, sys\n"
                  "atexit.register(lambda: open(os.environ['BENCH_MODULES'], 'w').write(str('tensorflow' in sys.modules)))\n")


def commands(store: Path, out: Path) -> dict[str, tuple[list[str], dict]]:
    py = sys.executable
    cli = [py, "-c", RUN_CLI]
    return {
        "baseline": ([py, "-c", REPORT_MODULES + "import sklearn.linear_model, zarr"], {}),
        "import cli": ([py, "-c", REPORT_MODULES + "import featcache.cli"], {}),
        "fit-head logreg": (cli + ["fit-head", str(store), "--head", "logreg", "--out", str(out / "lr"), "-q"], {}),
        "fit-head logreg, eager TF": (cli + ["fit-head", str(store), "--head", "logreg", "--out", str(out / "lr_tf"),
                                             "-q"], {"BENCH_EAGER_TF": "1"}),
        "fit-head knn": (cli + ["fit-head", str(store), "--head", "knn", "--out", str(out / "knn"), "-q"], {}),
        "sweep logreg": (cli + ["sweep", str(store), "--head", "logreg", "--C", "0.01,0.1,1", "--out",
                                str(out / "sweep"), "-q"], {}),
        "compare logreg+knn": (cli + ["compare", str(store), "--head", "logreg", "--head", "knn", "--out",
                                      str(out / "compare"), "-q"], {}),
        "audit": (cli + ["audit", str(store), "--out", str(out / "audit"), "-q"], {}),
        "fit-head mlp": (cli + ["fit-head", str(store), "--head", "mlp", "--epochs", "5", "--out", str(out / "mlp"),
                                "-q"], {}),
    }


def timed(cmd: list[str], env: dict, modules: Path) -> dict:
    modules.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "BENCH_MODULES": str(modules), **env})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:] or cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"seconds": seconds, "tensorflow_imported": modules.read_text() == "True",
            "stderr_lines": len(proc.stderr.splitlines())}


def orl_store(tmp: Path) -> Path:
    from featcache.ingest.sample_data import fetch

    store = tmp / "orl.zarr"
    subprocess.run([sys.executable, "-c", RUN_CLI, "extract", str(fetch("orl-faces")), "--store", str(store), "-q"],
                   check=True, env={**os.environ, "BENCH_MODULES": str(tmp / "m.txt")})
    return store


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="a feature store (default: the ORL photos extracted with Lite0)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated command labels (default: all)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="featcache-startup-") as tmp_name:
        tmp = Path(tmp_name)
        store = args.store or orl_store(tmp)
        cmds = commands(store, tmp / "runs")
        wanted = [c.strip() for c in args.only.split(",") if c.strip()]
        labels = ["baseline", *[c for c in cmds if c != "baseline" and (not wanted or c in wanted)]]
        runs: dict[str, list[dict]] = {c: [] for c in labels}
        load = [os.getloadavg()]
        for r in range(args.rounds):
            for label in labels:
                shutil.rmtree(tmp / "runs", ignore_errors=True)
                runs[label].append(timed(*cmds[label], tmp / "modules.txt"))
                print(f"round {r + 1}/{args.rounds} {label:<26} {runs[label][-1]['seconds']:6.2f} s", file=sys.stderr)
            load.append(os.getloadavg())
    median = {c: statistics.median(x["seconds"] for x in v) for c, v in runs.items()}
    best = {c: min(x["seconds"] for x in v) for c, v in runs.items()}
    ratio = {c: median[c] / median["baseline"] for c in runs}
    tf = {c: any(x["tensorflow_imported"] for x in v) for c, v in runs.items()}
    report = {"benchmark": "startup", "store": str(store), "rounds": args.rounds,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average_per_round": load},
              "runs": runs, "median_seconds": median, "best_seconds": best, "median_ratio_to_baseline": ratio,
              "tensorflow_imported": tf}
    print(f"wall time of a fresh process, median of {args.rounds} interleaved rounds "
          f"(load average {load[0][0]:.1f} -> {load[-1][0]:.1f})")
    print(f"{'command':<28}{'median s':>9}{'best s':>8}{'x baseline':>12}{'TensorFlow':>12}")
    for c in runs:
        print(f"{c:<28}{median[c]:>9.2f}{best[c]:>8.2f}{ratio[c]:>12.2f}{'imported' if tf[c] else 'no':>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
