"""Extraction behaviour: resume after a crash, incremental re-runs, config isolation, seeded views,
bad input, and one real run of EfficientNet-Lite0 on the ORL face photos.

All but the last use the tiny test backbone at its 32 px input on small generated images, and
real Zarr v3 / HDF5 stores on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_COLOURS, TINY, make_image, make_tree

from featcache.errors import FeatcacheError
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.augment import AugmentParams
from featcache.stores import DONE, FAILED, PENDING, open_store

CHUNK = 4
N_IMAGES = 24  # the image_tree fixture: 3 classes x 8


def extract_tiny(data: Path, store: Path, **kw):
    kw = {"weights": "random", "chunk_rows": CHUNK, "progress": False, **kw}
    return extract(data, store, ExtractOptions(backbones=[TINY], **kw))


def snapshot(store: Path) -> dict[str, dict]:
    """Every features array of a store, raw: {key: {features, status, digests}}."""
    with open_store(store) as st:
        return {key: {"features": st.backend.read(f"features/{key}/features"), "status": st[key].status(),
                      "digests": st[key].row_digests()} for key in st.keys()}


def features_by_path(store: Path, key: str = TINY) -> dict[str, np.ndarray]:
    with open_store(store) as st:
        fs = st.load([key])
    return dict(zip(fs.paths, fs.features, strict=True))


def assert_same_store_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key]["features"], b[key]["features"])
        np.testing.assert_array_equal(a[key]["status"], b[key]["status"])
        assert a[key]["digests"] == b[key]["digests"]


@pytest.fixture(params=[".zarr", ".h5"])
def store_path(request, tmp_path) -> Path:
    return tmp_path / f"features{request.param}"


# -- the backbone runner ---------------------------------------------------------------------------

def _identity_features(size: int, weights: str):
    """A 'backbone' whose feature map is its input: flattened, the features are the preprocessed pixels."""
    import keras

    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def identity_runner(mode: str, batch_size: int, monkeypatch):
    import featcache.backbones as backbones
    from featcache.backbones.model import resolve_config
    from featcache.config import FeatureConfig
    from featcache.extraction import BackboneRunner

    name = f"identity_{mode}"
    spec = backbones.BackboneSpec(name=name, input_size=32, feature_dim=32 * 32 * 3,
                                  preprocess=backbones.PREPROCESS[mode], build_features=_identity_features,
                                  weights_source="none", weights_identity=lambda size: "none")
    monkeypatch.setitem(backbones.BACKBONES._items, name, spec)  # registered for this test only
    return BackboneRunner(FeatureConfig(resolve_config(name, pooling="flatten", weights="random")), batch_size)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch", "efficientnet_lite", "none"])
def test_runner_feeds_the_model_exactly_the_backbones_preprocessing(mode, monkeypatch):
    from featcache.backbones import PREPROCESS

    images = np.random.default_rng(0).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    runner = identity_runner(mode, batch_size=4, monkeypatch=monkeypatch)
    got = runner(images)  # two full batches and a padded one, through the reused input buffer
    np.testing.assert_array_equal(got, PREPROCESS[mode](images).reshape(len(images), -1))


def test_runner_pads_to_a_fixed_batch_so_results_ignore_batch_neighbours(image_tree):
    from featcache.backbones.model import resolve_config
    from featcache.config import FeatureConfig
    from featcache.extraction import BackboneRunner
    from featcache.ingest.decode import read_image

    runner = BackboneRunner(FeatureConfig(resolve_config(TINY, weights="random")), batch_size=8)
    images = np.stack([read_image(p, 32) for p in sorted(image_tree.rglob("*.*"))])
    whole = runner(images)
    assert whole.shape == (N_IMAGES, 16)
    # the same positions in the batch, other neighbours (padding): identical
    np.testing.assert_array_equal(runner(images[16:19]), whole[16:19])
    # other positions in the batch: oneDNN may round differently at the last bit
    np.testing.assert_allclose(runner(images[5:8]), whole[5:8], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(runner(images[::-1])[::-1], whole, rtol=1e-5, atol=1e-7)


# -- resume after a crash --------------------------------------------------------------------------

# Runs extract in a child process that SIGKILLs itself right after writing the features of its
# 3rd chunk, before anything else reaches the disk (a real kill -9: no cleanup, no flush, no
# finally blocks). Writing status before features would leave done rows with no features here.
# An HDF5 store is written through its Zarr journal, so patching the Zarr backend covers both.
KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import conftest  # registers the tiny backbone
from featcache.ingest.augment import AugmentParams
from featcache.extraction import ExtractOptions, extract
from featcache.stores.zarr_backend import ZarrBackend

def killing(write):
    calls = []
    def wrapper(self, name, sel, data):
        write(self, name, sel, data)
        if name.endswith("/features"):
            calls.append(name)
            if len(calls) == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
    return wrapper

ZarrBackend.write = killing(ZarrBackend.write)
extract({data!r}, {store!r}, ExtractOptions(backbones=[conftest.TINY], weights="random", chunk_rows={chunk}, progress=False, augment=AugmentParams(augmented_views=2), workers=1))
"""


def run_and_kill(tmp_path: Path, data: Path, store: Path, kill_at: int) -> subprocess.CompletedProcess:
    script = tmp_path / "killed_extract.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT).format(
        tests=str(Path(__file__).parent), data=str(data), store=str(store), chunk=CHUNK, kill_at=kill_at))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)


def test_resume_after_kill_9_gives_the_same_arrays_as_an_uninterrupted_run(tmp_path, image_tree, store_path):
    proc = run_and_kill(tmp_path, image_tree, store_path, kill_at=3)
    assert proc.returncode == -9, proc.stderr[-2000:]
    if store_path.suffix == ".zarr":
        with open_store(store_path) as st:
            (key,) = st.keys()
            status = st[key].status()
        assert (status == DONE).sum() == 2 * CHUNK, "two whole chunks were committed before the kill"
        assert (status == PENDING).sum() > 0
    else:  # readers see the last committed file (none yet); the run's work waits in its journal
        assert not store_path.exists() and store_path.with_name(store_path.name + ".journal").is_dir()

    resumed = extract_tiny(image_tree, store_path, augment=AugmentParams(augmented_views=2))
    assert resumed.configs[0].extracted == N_IMAGES - 2 * CHUNK
    assert resumed.configs[0].reused == 2 * CHUNK

    reference = store_path.with_name("reference" + store_path.suffix)
    extract_tiny(image_tree, reference, augment=AugmentParams(augmented_views=2))
    assert_same_store_arrays(snapshot(store_path), snapshot(reference))


def test_an_exception_mid_run_keeps_committed_chunks_and_the_rerun_completes(image_tree, store_path, monkeypatch):
    from featcache.stores.store import FeatureStore

    original, calls = FeatureStore.commit_unit, []

    def failing_commit_unit(self, unit, *args):
        calls.append(unit.start)
        if len(calls) == 4:
            raise OSError("disk full (simulated)")
        original(self, unit, *args)

    monkeypatch.setattr(FeatureStore, "commit_unit", failing_commit_unit)
    with pytest.raises(OSError, match="disk full"):
        extract_tiny(image_tree, store_path)
    monkeypatch.setattr(FeatureStore, "commit_unit", original)
    assert sum((s["status"] == DONE).sum() for s in snapshot(store_path).values()) == 3 * CHUNK

    assert extract_tiny(image_tree, store_path).configs[0].extracted == N_IMAGES - 3 * CHUNK
    reference = store_path.with_name("reference" + store_path.suffix)
    extract_tiny(image_tree, reference)
    assert_same_store_arrays(snapshot(store_path), snapshot(reference))


# -- incremental re-runs ---------------------------------------------------------------------------

def test_rerun_on_unchanged_images_extracts_nothing(image_tree, store_path):
    first = extract_tiny(image_tree, store_path)
    before = snapshot(store_path)
    again = extract_tiny(image_tree, store_path)
    assert (first.configs[0].extracted, again.configs[0].extracted, again.configs[0].reused) == (24, 0, 24)
    assert_same_store_arrays(before, snapshot(store_path))


def test_adding_images_extracts_only_the_new_ones(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    before = features_by_path(store_path)
    for i, (name, colour) in enumerate(CLASS_COLOURS.items()):
        make_image(image_tree / name / f"added_{i}.png", colour, seed=1000 + i)
    result = extract_tiny(image_tree, store_path)
    assert result.configs[0].extracted == 3 and result.configs[0].reused == N_IMAGES
    after = features_by_path(store_path)
    assert len(after) == N_IMAGES + 3
    for path, feats in before.items():
        np.testing.assert_array_equal(after[path], feats)


def test_a_changed_file_at_the_same_path_is_reextracted(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    before = features_by_path(store_path)
    make_image(image_tree / "red" / "red_000.png", CLASS_COLOURS["blue"], seed=999)  # new content
    result = extract_tiny(image_tree, store_path)
    assert result.configs[0].extracted == 1
    after = features_by_path(store_path)
    assert not np.allclose(after["red/red_000.png"], before["red/red_000.png"])
    for path in set(before) - {"red/red_000.png"}:
        np.testing.assert_array_equal(after[path], before[path])


def test_a_removed_file_leaves_the_manifest_and_no_other_row_is_lost(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    before, arrays_before = features_by_path(store_path), snapshot(store_path)
    (image_tree / "green" / "green_003.png").unlink()
    result = extract_tiny(image_tree, store_path)
    assert (result.configs[0].extracted, result.images) == (0, N_IMAGES - 1)
    with open_store(store_path) as st:
        assert "green/green_003.png" not in st.manifest().paths
    after = features_by_path(store_path)
    assert set(after) == set(before) - {"green/green_003.png"}
    for path, feats in after.items():
        np.testing.assert_array_equal(feats, before[path])
    assert_same_store_arrays(arrays_before, snapshot(store_path))  # the row itself stays, reusable
    with open_store(store_path) as st:
        (key,) = st.keys()
        assert st.config_status(key).orphans == 1  # and `featcache info` says so


def test_a_renamed_or_moved_file_costs_nothing(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    before = features_by_path(store_path)
    (image_tree / "blue" / "blue_001.jpg").rename(image_tree / "blue" / "renamed.jpg")
    (image_tree / "red" / "red_002.bmp").rename(image_tree / "green" / "moved.bmp")
    result = extract_tiny(image_tree, store_path)
    assert result.configs[0].extracted == 0
    after = features_by_path(store_path)
    np.testing.assert_array_equal(after["blue/renamed.jpg"], before["blue/blue_001.jpg"])
    np.testing.assert_array_equal(after["green/moved.bmp"], before["red/red_002.bmp"])
    with open_store(store_path) as st:
        fs = st.load([TINY])
    assert fs.classes[fs.labels[fs.paths.index("green/moved.bmp")]] == "green"


def test_identical_files_share_one_row(image_tree, store_path):
    shutil.copy(image_tree / "red" / "red_001.jpg", image_tree / "red" / "copy_a.jpg")
    first = extract_tiny(image_tree, store_path)
    assert first.images == N_IMAGES + 1 and first.configs[0].extracted == N_IMAGES
    shutil.copy(image_tree / "red" / "red_001.jpg", image_tree / "red" / "copy_b.jpg")
    assert extract_tiny(image_tree, store_path).configs[0].extracted == 0
    (arrays,) = snapshot(store_path).values()
    used = [d for d in arrays["digests"] if d]
    assert len(used) == len(set(used)) == N_IMAGES
    after = features_by_path(store_path)
    np.testing.assert_array_equal(after["red/copy_a.jpg"], after["red/red_001.jpg"])
    np.testing.assert_array_equal(after["red/copy_b.jpg"], after["red/red_001.jpg"])


# -- configurations never mix ----------------------------------------------------------------------

VARIANTS = {
    "input size": {"image_size": 48},
    "pooling": {"pooling": "max"},
    "views": {"augment": AugmentParams(augmented_views=1)},
    "seed": {"augment": AugmentParams(augmented_views=1, seed=7)},
    "weights": {"weights": "imagenet"},  # the tiny backbone's "imagenet" identity: tiny-seeded-v1
    "dtype": {"dtype": "float32"},
}


def test_each_configuration_gets_its_own_features_array(image_tree, store_path):
    extract_tiny(image_tree, store_path)
    base = snapshot(store_path)
    keys = set(base)
    for name, options in VARIANTS.items():
        result = extract_tiny(image_tree, store_path, **options)
        run = result.configs[0]
        assert run.key not in keys, f"{name} reused another configuration's array"
        assert (run.extracted, run.reused) == (N_IMAGES, 0), name
        keys.add(run.key)
    arrays = snapshot(store_path)
    assert set(arrays) == keys and len(keys) == 1 + len(VARIANTS)
    assert_same_store_arrays(base, {k: arrays[k] for k in base})  # the first one untouched
    with open_store(store_path) as st:
        configs = {k: st.config(k) for k in keys}
        shapes = {k: st.backend.shape(f"features/{k}/features")[1:] for k in keys}
        assert all(st.config_status(k).complete for k in keys)
    assert len({c.to_dict().__repr__() for c in configs.values()}) == len(keys)
    assert sorted(shapes.values()) == sorted([(1, 16)] * 5 + [(2, 16)] * 2)
    for options in [{}, *VARIANTS.values()]:  # every configuration is found again, nothing recomputed
        assert extract_tiny(image_tree, store_path, **options).configs[0].extracted == 0


def test_two_backbones_in_one_run_fill_two_arrays(image_tree, store_path):
    result = extract(image_tree, store_path, ExtractOptions(backbones=[TINY, TINY], weights="random", chunk_rows=CHUNK, progress=False))
    assert [c.extracted for c in result.configs] == [N_IMAGES, 0]  # same config twice: computed once
    result = extract(image_tree, store_path, ExtractOptions(backbones=TINY, weights="random", chunk_rows=CHUNK, progress=False))
    assert result.configs[0].extracted == 0, "a single backbone name is accepted as a string"


def test_random_weights_are_one_network_so_reruns_and_resumes_agree(tmp_path):
    data = make_tree(tmp_path / "data", per_class=1)

    def features(store_name: str) -> np.ndarray:
        store = tmp_path / store_name
        extract(data, store, ExtractOptions(backbones=["efficientnet_lite0"], weights="random", image_size=32, dtype="float32", progress=False))
        with open_store(store) as st:
            return st.load(["efficientnet_lite0"]).features

    first, second = features("a.zarr"), features("b.zarr")
    assert np.abs(first).max() > 0
    np.testing.assert_array_equal(first, second)


def test_decoding_runs_a_bounded_window_ahead_of_the_backbone(image_tree, store_path, monkeypatch):
    """Memory does not grow with the data set or the chunk: one 64-row chunk holds all 24 images,
    yet the backbone sees its first batch before more than a few rows are decoded."""
    import keras

    from featcache.extraction.reader import ImageReader

    loaded, ahead = [], []
    load, predict = ImageReader.load, keras.Model.predict_on_batch
    monkeypatch.setattr(ImageReader, "load", lambda self, row: loaded.append(row) or load(self, row))
    monkeypatch.setattr(keras.Model, "predict_on_batch", lambda self, x: ahead.append(len(loaded)) or predict(self, x))
    result = extract_tiny(image_tree, store_path, chunk_rows=64, batch_size=2, workers=1)
    assert result.configs[0].extracted == N_IMAGES and len(ahead) == N_IMAGES // 2
    window = 4  # rows: max(2 * workers, 2 * batch_size / views)
    # rows decoded when batch i (rows 2i, 2i+1) reaches the model: the batch itself, the next one being
    # gathered meanwhile, and the reader's window
    assert max(n - 2 * i for i, n in enumerate(ahead)) <= 2 + 2 + window


# -- reproducible augmented views ------------------------------------------------------------------

def test_views_are_reproducible_from_the_seed_and_view0_ignores_it(image_tree, tmp_path):
    def views(store_name: str, seed: int) -> np.ndarray:
        store = tmp_path / store_name
        extract_tiny(image_tree, store, augment=AugmentParams(augmented_views=3, seed=seed), dtype="float32")
        with open_store(store) as st:
            return st.load([TINY]).features

    a, again, other = views("a.zarr", 0), views("again.h5", 0), views("other.zarr", 1)
    np.testing.assert_array_equal(a, again)
    np.testing.assert_array_equal(a[:, 0], other[:, 0])
    for v in range(1, 4):
        assert not np.isclose(a[:, v], other[:, v]).all(axis=1).any(), f"view {v} ignores the seed"
        assert not np.isclose(a[:, v], a[:, 0]).all(axis=1).any(), f"view {v} is not augmented"
    assert not np.isclose(a[:, 1], a[:, 2]).all(axis=1).any(), "views of one image differ"


# -- bad input -------------------------------------------------------------------------------------

BAD_FILES = {  # relative path -> words expected in the reason
    "red/truncated.jpg": "truncated",
    "green/corrupt.png": "corrupt",
    "blue/empty.png": "empty",
    "blue/not_an_image.jpg": "not a recognised image",
}


def add_bad_files(root: Path) -> None:
    photo = make_image(root / "scratch.jpg", (90, 90, 90), seed=5, size=(120, 100)).read_bytes()
    (root / "scratch.jpg").unlink()
    png = make_image(root / "scratch.png", (90, 90, 90), seed=6, size=(64, 64)).read_bytes()
    (root / "scratch.png").unlink()
    noise = np.random.default_rng(0).integers(0, 256, len(png), dtype=np.uint8).tobytes()
    (root / "red" / "truncated.jpg").write_bytes(photo[: len(photo) // 2])
    (root / "green" / "corrupt.png").write_bytes(png[:60] + noise[60:])  # valid header, garbage data
    (root / "blue" / "empty.png").write_bytes(b"")
    (root / "blue" / "not_an_image.jpg").write_text("just some text\n" * 20)
    (root / "blue" / "notes.txt").write_text("ignored: not an image extension")


def test_bad_files_are_skipped_with_a_reason_and_the_rest_extracted(image_tree, store_path, tmp_path):
    clean = tmp_path / ("clean" + store_path.suffix)
    extract_tiny(image_tree, clean, augment=AugmentParams(augmented_views=1), dtype="float32")
    add_bad_files(image_tree)
    result = extract_tiny(image_tree, store_path, augment=AugmentParams(augmented_views=1), dtype="float32")
    reasons = {s.path: s.reason for s in result.skipped}
    assert set(reasons) == set(BAD_FILES)
    for path, words in BAD_FILES.items():
        assert words in reasons[path], (path, reasons[path])
    run = result.configs[0]
    assert (run.extracted, run.failed, result.images) == (N_IMAGES, 4, N_IMAGES + 4)
    with open_store(store_path) as st:
        manifest = st.manifest()
        bad_digests = {manifest.digests[manifest.paths.index(p)] for p in BAD_FILES}
        status = dict(zip(st[run.key].row_digests(), st[run.key].status().tolist(), strict=True))
        recorded = st.skipped()
        fs = st.load([TINY])
        assert "blue/notes.txt" in manifest.ignored
    assert {status[d] for d in bad_digests} == {FAILED}
    assert sum(s == DONE for s in status.values()) == N_IMAGES
    assert {recorded[d].path for d in bad_digests} == {str(image_tree / p) for p in BAD_FILES}
    assert len(fs.paths) == N_IMAGES and not set(fs.paths) & set(BAD_FILES)
    good = features_by_path(clean)  # the failures shifted no good row's views
    assert all(np.array_equal(good[p], f) for p, f in zip(fs.paths, fs.features, strict=True))
    again = extract_tiny(image_tree, store_path, augment=AugmentParams(augmented_views=1), dtype="float32")
    # failures are remembered, not retried or forgotten
    assert again.configs[0].extracted == 0 and {s.path for s in again.skipped} == set(BAD_FILES)


def test_strict_stops_naming_the_file_and_keeps_what_was_written(image_tree, store_path):
    (image_tree / "red" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    with pytest.raises(FeatcacheError, match="truncated.jpg"):
        extract_tiny(image_tree, store_path, strict=True)
    (arrays,) = snapshot(store_path).values()
    done_before = int((arrays["status"] == DONE).sum())
    assert done_before >= 1 and int((arrays["status"] == FAILED).sum()) == 1

    with pytest.raises(FeatcacheError, match="truncated.jpg"):  # still refused on a strict re-run
        extract_tiny(image_tree, store_path, strict=True)
    result = extract_tiny(image_tree, store_path)
    assert result.configs[0].extracted == N_IMAGES - done_before
    (after,) = snapshot(store_path).values()
    written = arrays["status"] == DONE
    np.testing.assert_array_equal(after["features"][: len(written)][written], arrays["features"][written])


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    return tmp_path / "empty"


def _flat(tmp_path: Path) -> Path:  # images but no class folders
    make_image(tmp_path / "flat" / "a.png", (1, 2, 3), seed=0)
    return tmp_path / "flat"


def _a_file(tmp_path: Path) -> Path:
    return make_image(tmp_path / "one.png", (1, 2, 3), seed=0)


@pytest.mark.parametrize(("make_data", "message"), [
    (_missing, "does not exist"), (_empty, "no images found"), (_flat, "sub-folder per class"),
    (_a_file, "not a folder"),
])
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_missing_or_empty_data_folder_is_a_clear_error_and_creates_no_store(tmp_path, make_data, message, suffix):
    with pytest.raises(FeatcacheError, match=message):
        extract_tiny(make_data(tmp_path), tmp_path / f"features{suffix}")
    assert not list(tmp_path.glob("features*")), "no store, lock or journal is left behind"


def test_a_foreign_store_or_unknown_suffix_is_refused_before_any_work(image_tree, tmp_path):
    import h5py
    import zarr

    zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w").create_array("x", shape=(2,), dtype="i4")
    with h5py.File(tmp_path / "theirs.h5", "w") as f:
        f["x"] = [1, 2]
    for name in ("theirs.zarr", "theirs.h5"):
        with pytest.raises(FeatcacheError, match="not a featcache store"):
            extract_tiny(image_tree, tmp_path / name)
    with pytest.raises(FeatcacheError, match="unknown store type"):
        extract_tiny(image_tree, tmp_path / "features.parquet")
    assert zarr.open_array(str(tmp_path / "theirs.zarr" / "x"))[:].tolist() == [0, 0]


@pytest.mark.parametrize(("options", "message"), [
    ({"dtype": "float64"}, "unknown dtype"), ({"batch_size": 0}, "batch_size: must be from 1"),
    ({"pooling": "median"}, "unknown pooling"), ({"image_size": 8}, "image_size: tiny_test takes input sizes from 32"),
    ({"image_size": 100_000}, "image_size: .* to 2048"),
    ({"weights": "/no/such/weights.h5"}, "does not exist"),
])
def test_invalid_options_are_refused_before_touching_the_store(image_tree, tmp_path, options, message):
    with pytest.raises(FeatcacheError, match=message):
        extract_tiny(image_tree, tmp_path / "features.zarr", **options)
    assert not (tmp_path / "features.zarr").exists()
