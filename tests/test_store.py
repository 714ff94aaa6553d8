"""The feature store's on-disk schema (Zarr v3 and HDF5), reading it back, and refusing foreign stores.

Every test writes real files with the tiny test backbone at its 32 px input and checks them with
the raw zarr / h5py libraries as well as through ``open_store``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from conftest import TINY, make_tree
from store_harness import NUMPY_NET, NumpyRunner, run_extract

from featcache import __version__
from featcache.backbones import get_backbone
from featcache.backbones.model import build_feature_extractor, resolve_config
from featcache.errors import FeatcacheError
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.augment import AugmentParams
from featcache.ingest.decode import read_image
from featcache.ingest.scan import SPLITS, content_digest, scan
from featcache.stores import DONE, PENDING, open_store
from featcache.stores.info import store_info
from featcache.stores.store import SCHEMA_VERSION

CHUNK = 4
DIM = 16  # the tiny backbone's pooled size
N_IMAGES = 24  # the image_tree fixture: 3 classes x 8


def extract_tiny(data: Path, store: Path, **kw):
    kw = {"weights": "random", "chunk_rows": CHUNK, "progress": False, **kw}
    return extract(data, store, ExtractOptions(backbones=[TINY], **kw))


def only_key(store: Path) -> str:
    with open_store(store) as st:
        (key,) = st.keys()
    return key


def raw_features(store: Path, key: str):
    """The features array as the storage library itself sees it: (array, chunk shape, attrs dict)."""
    if store.suffix == ".zarr":
        arr = zarr.open_array(str(store / "features" / key / "features"), mode="r")
        group = zarr.open_group(str(store / "features" / key), mode="r")
        return arr[:], tuple(arr.chunks), dict(group.attrs)
    with h5py.File(store, "r") as f:
        ds = f[f"features/{key}/features"]
        attrs = {k: json.loads(v) for k, v in f[f"features/{key}"].attrs.items()}
        return ds[:], tuple(ds.chunks), attrs


@pytest.fixture(params=[".zarr", ".h5"])
def store_path(request, tmp_path) -> Path:
    return tmp_path / f"features{request.param}"


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_features_array_is_rows_by_views_by_dim_chunked_along_rows_only(image_tree, store_path, dtype):
    extract_tiny(image_tree, store_path, augment=AugmentParams(augmented_views=2), dtype=dtype)
    key = only_key(store_path)
    data, chunks, _ = raw_features(store_path, key)
    assert data.dtype == np.dtype(dtype)
    rows = data.shape[0]
    assert rows >= N_IMAGES and rows % CHUNK == 0, "pre-sized in whole chunks"
    assert data.shape[1:] == (3, DIM)  # V = 1 + K views, D
    assert chunks == (CHUNK, 3, DIM)
    assert np.isfinite(data).all()
    if store_path.suffix == ".zarr":
        assert json.loads((store_path / "zarr.json").read_text())["zarr_format"] == 3


def test_manifest_arrays_and_classes_describe_every_image(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    with open_store(store_path) as st:
        m = st.manifest()
    assert m.classes == ["blue", "green", "red"]
    assert len(m) == N_IMAGES
    assert m.paths == sorted(p.relative_to(image_tree).as_posix() for p in image_tree.rglob("*.*"))
    assert [m.classes[label] for label in m.labels] == [p.split("/")[0] for p in m.paths]
    assert m.digests == [content_digest(image_tree / p) for p in m.paths]
    assert set(m.splits.tolist()) <= {0, 1, 2}
    assert Path(m.data_root) == image_tree.resolve()


def test_status_marks_manifest_rows_done_and_padding_rows_unused(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    key = only_key(store_path)
    with open_store(store_path) as st:
        digests, status = st[key].row_digests(), st[key].status()
        manifest = st.manifest()
    assert len(digests) == len(status)
    for digest, s in zip(digests, status, strict=True):
        assert s == (DONE if digest else PENDING)
    assert sorted(d for d in digests if d) == sorted(manifest.digests)


def test_attrs_record_everything_the_features_depend_on(image_tree, store_path):
    augment = AugmentParams(augmented_views=1, rotation=7.0, zoom=0.05, seed=42)
    extract_tiny(image_tree, store_path, augment=augment, dtype="float32", pooling="max")
    key = only_key(store_path)
    _, _, attrs = raw_features(store_path, key)
    config = attrs["config"]
    pre = get_backbone(TINY).preprocess
    assert config["backbone"] == {"name": TINY, "input_size": 32, "pooling": "max", "weights": "random",
                                  "weights_id": "random", "builder": "conftest:TINY_SPEC",
                                  "preprocess": {"name": pre.name, "scale": list(pre.scale), "offset": list(pre.offset),
                                                 "channel_order": pre.channel_order}}
    assert config["augment"] == augment.to_dict()
    assert config["dtype"] == "float32"
    assert attrs["featcache_version"] == __version__
    assert attrs["chunk_rows"] == CHUNK
    assert attrs["stats"]["rows"] == N_IMAGES and attrs["stats"]["images"] == 2 * N_IMAGES
    with open_store(store_path) as st:
        root = st.backend.get_attrs()
        assert st.config(key).to_dict() == config
    assert root["featcache_schema"] == SCHEMA_VERSION and root["featcache_version"] == __version__


def test_load_gives_every_image_once_split_by_train_validation_test(image_tree, store_path):
    extract_tiny(image_tree, store_path, augment=AugmentParams(augmented_views=1))
    with open_store(store_path) as st:
        fs = st.load([TINY])
        manifest = st.manifest()
    assert fs.features.shape == (N_IMAGES, 2, DIM) and fs.features.dtype == np.float32
    assert fs.paths == manifest.paths and fs.classes == manifest.classes
    sizes = 0
    for name in SPLITS:
        feats, labels = fs.split(name)
        idx = fs.indices(name)
        np.testing.assert_array_equal(feats, fs.features[idx])
        np.testing.assert_array_equal(labels, manifest.labels[idx])
        sizes += len(feats)
    assert sizes == N_IMAGES
    assert len(fs.split("train")[0]) > len(fs.split("test")[0])


def direct_features(cfg_backbone, paths: list[Path]) -> np.ndarray:
    """The backbone run by hand on the un-augmented images, without featcache's pipeline."""
    model = build_feature_extractor(cfg_backbone)
    preprocess = get_backbone(cfg_backbone.name).preprocess
    images = np.stack([read_image(p, cfg_backbone.input_size) for p in paths])
    return np.asarray(model.predict_on_batch(preprocess(images)))


@pytest.mark.parametrize(("dtype", "rtol"), [("float32", 1e-5), ("float16", 2e-3)])
def test_view0_equals_the_backbone_run_directly_on_the_unaugmented_image(image_tree, store_path, dtype, rtol):
    extract_tiny(image_tree, store_path, augment=AugmentParams(augmented_views=2), dtype=dtype)
    with open_store(store_path) as st:
        fs = st.load([TINY])
    expected = direct_features(resolve_config(TINY, weights="random"), [image_tree / p for p in fs.paths])
    np.testing.assert_allclose(fs.features[:, 0], expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    assert not np.allclose(fs.features[:, 1], expected, rtol=0.05), "views 1..K are augmented"


def test_load_refuses_incomplete_features_unless_allowed(image_tree, store_path):
    from featcache.config import FeatureConfig

    manifest = scan(image_tree)
    with open_store(store_path, mode="a") as st:
        st.write_manifest(manifest)
        key = st.ensure_config(FeatureConfig(resolve_config(TINY, weights="random")), DIM, CHUNK)
        units = st[key].plan(manifest.digests)
        assert sum(len(u.rows) for u in units) == N_IMAGES
        assert all(u.start % CHUNK == 0 and u.stop - u.start == CHUNK for u in units)
    with open_store(store_path) as st:
        with pytest.raises(FeatcacheError, match="incomplete"):
            st.load([key])
        assert len(st.load([key], allow_incomplete=True).paths) == 0
        assert st.config_status(key).pending == N_IMAGES


def test_reading_a_missing_store_or_unknown_key_is_a_clear_error(image_tree, store_path):
    with pytest.raises(FeatcacheError, match="does not exist"):
        open_store(store_path)
    extract_tiny(image_tree, store_path)
    with open_store(store_path) as st, pytest.raises(FeatcacheError, match="no features for 'resnet50'"):
        st.load(["resnet50"])


def _foreign_zarr_group(path: Path) -> None:
    zarr.open_group(str(path), mode="w").create_array("x", shape=(3,), dtype="f4")


def _foreign_zarr_v2(path: Path) -> None:
    zarr.open_group(str(path), mode="w", zarr_format=2).attrs["owner"] = "someone else"


def _plain_folder(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("not a store")


def _foreign_h5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)


def _text_file(path: Path) -> None:
    path.write_text("not a store")


@pytest.mark.parametrize(("name", "make"), [
    ("group.zarr", _foreign_zarr_group), ("v2.zarr", _foreign_zarr_v2), ("folder.zarr", _plain_folder),
    ("data.h5", _foreign_h5), ("text.h5", _text_file), ("text.zarr", _text_file),
])
def test_a_non_featcache_store_at_the_path_is_refused_and_left_untouched(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    before = sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_size) for p in tmp_path.rglob("*"))
    for mode in ("a", "r"):
        with pytest.raises(FeatcacheError, match=str(path)):
            open_store(path, mode=mode)
    assert sorted((p.relative_to(tmp_path).as_posix(), p.stat().st_size) for p in tmp_path.rglob("*")) == before


def test_unknown_store_suffix_is_refused(tmp_path):
    with pytest.raises(FeatcacheError, match=r"\.npy"):
        open_store(tmp_path / "features.npy", mode="a")


def test_a_store_of_another_schema_version_is_refused(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    with open_store(store_path, mode="a") as st:
        st.backend.set_attrs("", {"featcache_schema": SCHEMA_VERSION + 1})
    with pytest.raises(FeatcacheError, match="schema"):
        open_store(store_path)


# -- store-side findings of issue 9 (numpy stand-in backbone: no TensorFlow) ------------------------

def test_info_names_skipped_files_relative_to_the_data_folder_as_extract_does(tmp_path, store_path):
    data = make_tree(tmp_path / "data", per_class=1)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    result = run_extract(data, store_path)
    assert [s.path for s in result.skipped] == ["red/broken.jpg"]
    assert [s["path"] for s in store_info(store_path).skipped] == ["red/broken.jpg"]


def test_a_resume_computes_with_the_batch_size_the_configuration_started_with(tmp_path, store_path, monkeypatch):
    """A real backbone's features differ by ~1e-4 between batch shapes (oneDNN): here the stand-in's
    differ by a lot, so any row computed with another batch size shows."""
    monkeypatch.setattr(NumpyRunner, "batch_effect", 1.0)
    data = make_tree(tmp_path / "data", per_class=2)
    part = shutil.copytree(data, tmp_path / "part")
    for path in part.rglob("*_001.*"):
        path.unlink()
    run_extract(part, store_path, batch_size=1)
    run = run_extract(data, store_path, batch_size=8).configs[0]
    assert (run.batch_size, run.extracted, run.reused) == (1, 3, 3)
    reference = tmp_path / f"reference{store_path.suffix}"
    run_extract(data, reference, batch_size=1)
    with open_store(store_path) as st, open_store(reference) as ref:
        np.testing.assert_array_equal(st.load([NUMPY_NET]).features, ref.load([NUMPY_NET]).features)
        assert st[run.key].batch_size() == 1


def test_a_zarr_store_killed_before_its_first_metadata_is_created_on_the_next_run(tmp_path):
    """A kill at the very first write leaves a folder holding only a temporary file."""
    store = tmp_path / "features.zarr"
    (store / "manifests").mkdir(parents=True)
    (store / "zarr.json.0123456789ab.partial").write_text('{"attri')
    with pytest.raises(FeatcacheError, match="no store was written there yet.*run the extract again"):
        open_store(store)
    result = run_extract(make_tree(tmp_path / "data", per_class=1), store)
    assert result.configs[0].extracted == 3 and not list(store.rglob("*.partial"))


def _obeying_permissions(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python code in a process that obeys file permission bits even as root: root's override
    capabilities are dropped from its bounding set before it starts (prctl PR_CAPBSET_DROP)."""
    def drop_override():
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=str(Path(__file__).parent), env=env, text=True,
                          capture_output=True, timeout=120, preexec_fn=drop_override if os.geteuid() == 0 else None)


READ_ONLY_CHILD = """
import shutil, sys
from store_harness import run_extract
from featcache.errors import FeatcacheError
data, stores = sys.argv[1], sys.argv[2:]
for store in stores:
    print("noop", run_extract(data, store).configs[0].reused)
shutil.copy(data + "/blue/blue_000.png", data + "/blue/other.png")
with open(data + "/blue/other.png", "ab") as f:  # new content: a new row to write
    f.write(b"trailing bytes")
for store in stores:
    try:
        run_extract(data, store)
    except FeatcacheError as exc:
        print("refused", exc)
"""


def test_a_read_only_store_reruns_without_writing_and_refuses_a_needed_write_clearly(tmp_path, store_path):
    """Two read-only stores: one in a read-only folder (no lock file can be made), one in a writable
    folder. A re-run with nothing to do reads and succeeds; one with work says why it cannot write."""
    root = Path(tempfile.mkdtemp(prefix="featcache-ro-"))
    try:
        data = make_tree(root / "data", per_class=1)
        stores = [root / "ro" / store_path.name, root / "rw" / store_path.name]
        for store in stores:
            run_extract(data, store)
        for path in [p for store in stores for p in [store, *store.rglob("*")]]:
            path.chmod(path.stat().st_mode & ~0o222)
        (root / "ro").chmod(0o555)
        (root / "rw").chmod(0o777)
        for path in [data, *[p for p in data.rglob("*") if p.is_dir()]]:
            path.chmod(0o777)
        before = {p: p.stat().st_mtime_ns for store in stores for p in [store, *store.rglob("*")]}
        proc = _obeying_permissions(READ_ONLY_CHILD, str(data), *map(str, stores))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        lines = proc.stdout.splitlines()
        assert lines[:2] == ["noop 3", "noop 3"], proc.stdout
        assert len(lines) == 4, proc.stdout
        assert "cannot create its lock file" in lines[2] and str(stores[0]) in lines[2], lines[2]
        assert "cannot write" in lines[3] and "read-only" in lines[3] and str(stores[1]) in lines[3], lines[3]
        assert before == {p: p.stat().st_mtime_ns for store in stores for p in [store, *store.rglob("*")]}
    finally:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(root)
