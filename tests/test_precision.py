"""The accelerator path on any machine: mixed precision, XLA, JPEG draft decoding, device choice and
--batch-size auto. Each computation setting that changes the numbers is its own configuration."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, extract_cli, make_tree

from featcache.backbones.devices import AUTO_CPU_BATCH, largest_batch, resolve_precision, visible_gpus
from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.decode import read_image
from featcache.stores import open_store


@pytest.fixture
def photos(imagenet_samples_dir, tmp_path) -> Path:
    """The 20 ImageNet photos (512 px JPEGs) as a class-per-folder tree: class = true label."""
    for f in sorted(imagenet_samples_dir.glob("*.jpg")):
        target = tmp_path / "photos" / f.stem.rsplit("_", 1)[1] / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f)
    return tmp_path / "photos"


def features_by_key(store) -> dict[str, dict[str, np.ndarray]]:
    """{key: {image path: view-0 features}}"""
    with open_store(store) as st:
        out = {}
        for key in st.keys():
            fs = st.load([key])
            out[key] = dict(zip(fs.paths, fs.features[:, 0], strict=True))
    return out


def cosines(a: dict, b: dict) -> np.ndarray:
    x, y = np.stack([a[p] for p in sorted(a)]), np.stack([b[p] for p in sorted(a)])
    return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


def cpu_has_bfloat16() -> bool:
    """AMX or AVX-512 BF16: bfloat16 in hardware. Elsewhere TensorFlow emulates it, too slowly for a test."""
    try:
        return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        return False


def test_mixed_means_float16_on_every_device():
    # not the CPU's bfloat16, even where it has it: "mixed" must give the same numbers on any machine
    assert resolve_precision("mixed") == "mixed_float16"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"  # only by name
    assert resolve_precision("float32") == "float32"


@pytest.mark.slow
def test_mixed_precision_features_match_float32_on_real_photos_under_their_own_key(photos, tmp_path):
    store = tmp_path / "s.zarr"
    precisions = ("float32", "mixed", *(("mixed_bfloat16",) if cpu_has_bfloat16() else ()))
    # 128 px, not 224: the same network and weights at a third of the arithmetic (float16 is emulated on CPUs)
    keys = {p: extract(photos, store, ExtractOptions(backbones=("efficientnet_lite0",), precision=p, dtype="float32",
                                                     image_size=128, batch_size=10, progress=False)).configs[0].key
            for p in precisions}
    assert len(set(keys.values())) == len(precisions)  # each precision is its own configuration
    assert keys["mixed"].split("-")[-2] == "f16"
    feats = features_by_key(store)
    with open_store(store) as st:
        assert st.config(keys["float32"]).compute.precision == "float32"
        assert st.config(keys["mixed"]).compute.precision == "mixed_float16"
    full = feats[keys["float32"]]
    cos = cosines(full, feats[keys["mixed"]])
    assert len(cos) == 20 and cos.min() >= 0.999, cos.min()
    first = sorted(full)[0]
    assert not np.array_equal(full[first], feats[keys["mixed"]][first])
    if "mixed_bfloat16" in keys:  # named explicitly: its own key, and only as close as an 8-bit mantissa allows
        assert keys["mixed_bfloat16"].split("-")[-2] == "bf16"
        with open_store(store) as st:
            assert st.config(keys["mixed_bfloat16"]).compute.precision == "mixed_bfloat16"
        cos = cosines(full, feats[keys["mixed_bfloat16"]])
        assert len(cos) == 20 and cos.min() >= 0.99, cos.min()  # measured: 0.997 on these photos


def test_xla_and_jpeg_draft_are_configurations_of_their_own(photos, tmp_path):
    store = tmp_path / "s.zarr"
    base = {"backbones": (TINY,), "weights": "random", "dtype": "float32", "progress": False}
    keys = [extract(photos, store, ExtractOptions(**base, **kw)).configs[0].key
            for kw in ({}, {"jit": True}, {"jpeg_draft": True})]
    assert len(set(keys)) == 3 and keys[1].split("-")[-2] == "xla" and keys[2].split("-")[-2] == "draft"
    feats = features_by_key(store)
    assert cosines(feats[keys[0]], feats[keys[1]]).min() > 0.9999  # XLA: other rounding, same network
    assert cosines(feats[keys[0]], feats[keys[2]]).min() > 0.99  # draft: slightly other pixels
    photo = sorted(photos.rglob("*.jpg"))[0]  # 512 px: decoded at 1/8 for a 32 px input
    full, draft = read_image(photo, 32), read_image(photo, 32, jpeg_draft=True)
    assert full.shape == draft.shape == (32, 32, 3) and not np.array_equal(full, draft)
    assert np.abs(full.astype(int) - draft.astype(int)).mean() < 8
    again = extract(photos, store, ExtractOptions(**base, jit=True))
    assert again.configs[0].key == keys[1] and again.configs[0].reused == 20


def test_batch_size_auto_is_32_on_a_cpu_and_recorded(tmp_path):
    if visible_gpus():
        pytest.skip("a GPU is visible: auto probes it")
    store = tmp_path / "s.zarr"
    run = extract(make_tree(tmp_path / "d", per_class=2), store,
                  ExtractOptions(backbones=(TINY,), weights="random", batch_size="auto", progress=False)).configs[0]
    assert run.batch_size == AUTO_CPU_BATCH
    with open_store(store) as st:
        assert st[run.key].batch_size() == AUTO_CPU_BATCH


def test_batch_size_auto_backs_off_on_out_of_memory():
    import tensorflow as tf

    tried = []

    def fits(batch: int) -> None:  # a device with room for 100 images
        tried.append(batch)
        if batch > 100:
            raise tf.errors.ResourceExhaustedError(None, None, f"OOM when allocating tensor of batch {batch}")

    assert largest_batch(fits, "/GPU:0", start=1024) == 64
    assert tried == [1024, 512, 256, 128, 64]

    def broken(batch: int) -> None:
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        largest_batch(broken, "/GPU:0")


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device: expected cpu, gpu or gpu:N"),
    (["--precision", "float8"], "--precision: expected float32, mixed"),
    (["--batch-size", "lots"], "--batch-size"),
])
def test_bad_accelerator_flags_are_one_line_errors(tmp_path, args, message):
    r = extract_cli(tmp_path, *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_device_cpu_runs_and_gpu_without_one_says_so(tmp_path):
    data = make_tree(tmp_path / "d", per_class=1)
    args = ["extract", str(data), "--store", str(tmp_path / "s.zarr"), "-b", TINY, "--weights", "random", "-q"]
    assert CliRunner().invoke(cli, [*args, "--device", "cpu"]).exit_code == 0
    if not visible_gpus():
        r = CliRunner().invoke(cli, [*args, "--device", "gpu:0"])
        assert r.exit_code == 2 and "--device: gpu:0: no GPU is visible" in r.output, r.output
