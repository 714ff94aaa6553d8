"""Data sets with known problems, for the audit's tests and benchmarks/bench_neighbors.py."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from featcache.ingest.scan import SplitFractions, content_digest, split_from_digest


def other_split_copy(src: Path, dest: Path) -> Path:
    """A JPEG re-encoding of ``src`` whose content digest puts it in another split than ``src``
    (the split is a function of the digest, so trying qualities from 95 down finds one)."""
    split = split_from_digest(content_digest(src), SplitFractions())
    for quality in range(95, 60, -1):
        Image.open(src).save(dest, "JPEG", quality=quality)
        if split_from_digest(content_digest(dest), SplitFractions()) != split:
            return dest
    raise AssertionError("no JPEG quality moved the copy to another split")


def modified_orl(root: Path, orl_dir: Path, imagenet_dir: Path, seed: int = 0) -> dict:
    """ORL with 20 photos moved to another person's folder, 10 JPEG re-encodings (5 in the same
    folder but another split, 5 at quality 80 in another person's folder), a blank image and an
    ImageNet photo. Returns the truth: moved path -> true person, copy -> original, the odd images."""
    shutil.copytree(orl_dir, root, ignore=shutil.ignore_patterns(".*"))
    rng = np.random.default_rng(seed)
    people = sorted(p.name for p in root.iterdir() if p.is_dir())
    chosen = rng.choice(len(people), 30, replace=False)
    moved, copies = {}, {}
    for i in chosen[:20]:
        photo = sorted((root / people[i]).glob("*.pgm"))[rng.integers(10)]
        dest = people[(i + rng.integers(1, len(people))) % len(people)]
        shutil.move(photo, root / dest / f"moved_{people[i]}_{photo.name}")
        moved[f"{dest}/moved_{people[i]}_{photo.name}"] = people[i]
    for n, i in enumerate(chosen[20:]):
        photo = sorted((root / people[i]).glob("*.pgm"))[rng.integers(10)]
        if n < 5:
            copy = other_split_copy(photo, root / people[i] / f"copy_{photo.stem}.jpg")
        else:
            copy = root / people[(i + rng.integers(1, len(people))) % len(people)] / f"copy_{people[i]}_{photo.stem}.jpg"
            buf = io.BytesIO()
            Image.open(photo).save(buf, "JPEG", quality=80)
            copy.write_bytes(buf.getvalue())
        copies[copy.relative_to(root).as_posix()] = photo.relative_to(root).as_posix()
    Image.new("L", (92, 112), 128).save(root / "s3" / "blank.png")
    shutil.copy(sorted(imagenet_dir.glob("imagenet_00_*.jpg"))[0], root / "s7" / "imagenet.jpg")
    return {"moved": moved, "copies": copies, "odd": ["s3/blank.png", "s7/imagenet.jpg"]}
