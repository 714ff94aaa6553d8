"""The rest of keras.applications (EfficientNet B1-B7 and V2, ConvNeXt S-XL, MobileNetV3, ResNet101/152
and V2, DenseNet169/201, NASNet): preprocessing numbers against each module's own preprocess_input,
a representative of each family built with random weights (feature size, declared parameter count,
blocks), listed by `featcache backbones --json`, and the offline error for their ImageNet weights.
Every entry is built by scripts/check_keras_apps.py (benchmarks/results/keras_apps_check.json)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from featcache.backbones import get_backbone, keras_apps
from featcache.backbones.blocks import backbone_blocks
from featcache.backbones.model import resolve_config
from featcache.cli import cli

NEW = [name for name in keras_apps._APPS if name not in keras_apps.CLASSIC]
# the cheap ones of the new families, at 32 px (DenseNet, NASNet and the rest: the script above)
BUILT = {"mobilenet_v3_small": 13, "efficientnet_v2_b0": 23, "convnext_small": 40, "resnet101_v2": 0}


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    import keras

    keras.backend.clear_session()


@pytest.mark.parametrize("name", NEW)
def test_preprocessing_is_the_modules_own_preprocess_input_on_uint8_images(name):
    import keras

    constructor = getattr(keras.applications, keras_apps._APPS[name].constructor)
    preprocess_input = importlib.import_module(constructor.__module__).preprocess_input
    x = np.random.default_rng(2).integers(0, 256, (2, 7, 7, 3), dtype=np.uint8)
    expected = np.asarray(preprocess_input(x.astype(np.float32)))
    got = get_backbone(name).preprocess(x)
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


def test_the_built_in_preprocessing_families_take_0_255_pixels_unchanged():
    """EfficientNet(V2), ConvNeXt and MobileNetV3 normalise inside the model: their first layers
    are Keras' own Rescaling/Normalization, so featcache's numbers are scale 1, offset 0."""
    for name in NEW:
        constructor = keras_apps._APPS[name].constructor
        inside = constructor.startswith(("EfficientNet", "ConvNeXt", "MobileNetV3"))
        pre = get_backbone(name).preprocess
        assert (pre.scale == (1.0,) * 3 and pre.offset == (0.0,) * 3) == inside, name


@pytest.mark.parametrize("name", BUILT)
def test_a_random_weights_build_has_the_declared_size_parameters_and_blocks(name):
    spec = get_backbone(name)
    assert resolve_config(name, 32, weights="random").weights_id == "random"
    model = spec.build_features(32, "random")  # the headless network whose weights are declared
    out = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32"),
                           training=False))
    assert out.shape[-1] == spec.feature_dim and np.isfinite(out).all()
    assert model.count_params() == spec.parameters
    blocks = backbone_blocks(list(model.layers), spec.block_pattern)
    assert len(blocks) > 4 and (BUILT[name] == 0 or len(blocks) == BUILT[name]), [b.name for b in blocks]


def test_backbones_json_lists_every_new_entry_with_its_numbers():
    result = CliRunner().invoke(cli, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in NEW:
        spec = get_backbone(name)
        row = rows[name]
        assert (row["family"], row["input_size"], row["feature_dim"], row["parameters"]) == (
            "cnn", spec.input_size, spec.feature_dim, spec.parameters), name
        assert row["preprocess"]["scale"] == list(spec.preprocess.scale)
    assert rows["efficientnet_v2_s"]["input_size"] == 384 and rows["nasnet_large"]["input_size"] == 331


_OFFLINE = """
import json
from featcache.backbones.model import build_feature_extractor, resolve_config
from featcache.errors import WeightsUnavailableError
out = {}
for name in ("mobilenet_v3_small", "efficientnet_v2_b0"):
    try:
        build_feature_extractor(resolve_config(name, 64))
        out[name] = None
    except WeightsUnavailableError as exc:
        out[name] = str(exc)
print("RESULT" + json.dumps(out))
"""


def test_missing_imagenet_weights_are_the_one_error_with_its_remedy(tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _OFFLINE], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT"):])
    if None in result.values():
        pytest.skip("this machine could download the ImageNet weights")
    for name, file in (("mobilenet_v3_small", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
                       ("efficientnet_v2_b0", "efficientnetv2-b0_notop.h5")):
        message = result[name]
        assert f"{name}: ImageNet weights could not be downloaded" in message, message
        assert file in message and str(tmp_path / "models") in message and "give a local weights file" in message
