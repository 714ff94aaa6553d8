"""Fashion-MNIST from IDX files (the Debian package's format), written as PNG class folders."""

from __future__ import annotations

import gzip
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from featcache.errors import FeatcacheError
from featcache.ingest import sample_data
from featcache.ingest.sample_data import DATASETS, fetch, read_idx


def _idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_become_class_folders(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 7), ("t10k", 4)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = replace(DATASETS["fashion-mnist"], folder=str(tmp_path), counts=(("train", "train", 5), ("test", "t10k", 4)))
    monkeypatch.setitem(sample_data.DATASETS, "fashion-mnist", ds)
    out = fetch("fashion-mnist", tmp_path / "out")
    images = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert images.shape == (7, 28, 28)
    assert len(list((out / "train").rglob("*.png"))) == 5 and len(list((out / "test").rglob("*.png"))) == 4
    third = out / "train" / ds.classes[2] / "train-00002.png"  # label 2: pullover
    np.testing.assert_array_equal(np.asarray(Image.open(third)), images[2])


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sample_data.DATASETS, "fashion-mnist", replace(DATASETS["fashion-mnist"], folder=str(tmp_path)))
    with pytest.raises(FeatcacheError, match="apt-get install dataset-fashion-mnist"):
        fetch("fashion-mnist", tmp_path / "out")
    assert not (tmp_path / "out").exists()
